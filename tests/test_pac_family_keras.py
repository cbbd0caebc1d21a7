"""numvox.tf / numvox.keras for the PAC family: differentiable transposed PAC and PAC pooling,
the PacConvTranspose and PacPool layers (training, saving, mixed precision, shape errors)."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import numvox  # noqa: E402
import numvox.keras as nk  # noqa: E402
import numvox.tf as ntf  # noqa: E402


@pytest.mark.parametrize("in_graph", [False, True])
def test_tf_gradients_are_the_backward_functions(in_graph):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 4, 2)).astype(np.float32)
    f = rng.standard_normal((1, 6, 8, 2)).astype(np.float32)
    w = rng.standard_normal((4, 4, 2, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    up = rng.standard_normal((1, 6, 8, 3)).astype(np.float32)
    opts = dict(stride=2, padding=1, normalize=True, kernel="inv_0.5_-1")
    popts = dict(padding=1, kernel="gaussian", normalize=True)

    def run():
        ts = [tf.constant(a) for a in (x, f, w, b)]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(ts)
            y = ntf.pac_conv_transpose(*ts, **opts)
            p = ntf.pac_pool(ts[1], ts[1], 3, **popts)
            loss_t = tf.reduce_sum(y * up)
            loss_p = tf.reduce_sum(p * ts[1])
        return y, tape.gradient(loss_t, ts), tape.gradient(loss_p, ts[1])

    y, g_t, g_p = (tf.function(run) if in_graph else run)()
    np.testing.assert_allclose(y.numpy(), numvox.pac_conv_transpose(x, f, w, b, **opts), rtol=1e-6)
    for got, want in zip(g_t, numvox.pac_conv_transpose_backward(up, x, f, w, **opts)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    gx, gf = numvox.pac_pool_backward(f, f, f, 3, **popts)
    np.testing.assert_allclose(g_p.numpy(), gx + gf + numvox.pac_pool(f, f, 3, **popts), rtol=1e-5, atol=1e-6)


def _upsampler(kernel="gaussian"):
    xi, gi = keras.Input((6, 6, 2)), keras.Input((12, 12, 3))
    up = nk.PacConvTranspose2D(4, 4, strides=2, padding=1, normalize=True, kernel=kernel)([xi, gi])
    out = nk.PacPool2D(3, padding=1, normalize=True, kernel=kernel)([up, gi])
    return keras.Model([xi, gi], keras.layers.Conv2D(2, 1)(out))


def test_layers_train_save_and_reload(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
    g = rng.standard_normal((4, 12, 12, 3)).astype(np.float32)
    y = rng.standard_normal((4, 12, 12, 2)).astype(np.float32)
    model = _upsampler("inv_0.5_-1_asym")
    assert model.output_shape == (None, 12, 12, 2)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    before = model.evaluate([x, g], y, verbose=0)
    model.fit([x, g], y, epochs=5, verbose=0)
    assert model.evaluate([x, g], y, verbose=0) < before
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again.predict([x, g], verbose=0), model.predict([x, g], verbose=0), rtol=1e-6)
    layer = again.layers[2]
    assert isinstance(layer, nk.PacConvTranspose2D) and layer.kernel_kind == "inv_0.5_-1_asym"


def test_3d_layers_shapes_and_errors():
    x3, g3 = keras.Input((3, 4, 4, 2)), keras.Input((6, 8, 8, 1))
    assert nk.PacConvTranspose3D(2, 3, strides=2, padding=1, output_padding=1)([x3, g3]).shape == (None, 6, 8, 8, 2)
    assert nk.PacPool3D(3, strides=2, padding=1)([g3, g3]).shape == (None, 3, 4, 4, 1)
    with pytest.raises(ValueError, match=r"guide has shape \(None, 12, 11, 3\).*\(12, 12\)"):
        nk.PacConvTranspose2D(4, 4, strides=2, padding=1)([keras.Input((6, 6, 2)), keras.Input((12, 11, 3))])
    with pytest.raises(ValueError, match="guide has shape"):
        nk.PacPool2D(3)([keras.Input((6, 6, 2)), keras.Input((6, 5, 2))])
    with pytest.raises(ValueError, match="channel_wise=True"):
        nk.PacPool2D(3, channel_wise=True)([keras.Input((6, 6, 2)), keras.Input((6, 6, 3))])
    with pytest.raises(ValueError, match="kernel must be one of"):
        nk.PacPool2D(3, kernel="laplace")


def test_mixed_precision():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.standard_normal((1, 5, 5, 2)).astype(np.float16))
    g = tf.constant(rng.standard_normal((1, 10, 10, 1)).astype(np.float16))
    layer = nk.PacConvTranspose2D(3, 4, strides=2, padding=1, dtype="mixed_float16")
    out = layer([x, g])
    assert out.dtype == tf.float16 and out.shape == (1, 10, 10, 3)
    pooled = nk.PacPool2D(3, padding=1, dtype="mixed_float16")([out, g])
    assert pooled.dtype == tf.float16 and pooled.shape == (1, 10, 10, 3)
