"""PAC against TensorFlow: autodiff of an im2col reference, Keras layers (training, tf.function,
mixed precision, saving)."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import numvox  # noqa: E402


def tf_im2col_pac(x, f, w, b, stride, padding, dil, normalize):
    """Independent TF reference: pad, slice each tap (strided), Gaussian weights, tensordot."""
    d = len(w.shape) - 2
    ks = tuple(int(k) for k in w.shape[:d])
    S = tuple(int(s) for s in x.shape[1:-1])
    stride = (stride,) * d if np.isscalar(stride) else tuple(stride)
    dil = (dil,) * d if np.isscalar(dil) else tuple(dil)
    if padding == "valid":
        lo = hi = (0,) * d
    elif padding == "same":
        lo = tuple(dl * (k - 1) // 2 for k, dl in zip(ks, dil))
        hi = tuple(dl * (k - 1) - l for k, dl, l in zip(ks, dil, lo))
    else:
        lo = hi = (padding,) * d if np.isscalar(padding) else tuple(padding)
    pads = [[0, 0]] + [[a, c] for a, c in zip(lo, hi)] + [[0, 0]]
    xp, fp = tf.pad(x, pads), tf.pad(f, pads)
    mp = tf.pad(tf.ones((1,) + S + (1,), x.dtype), pads)
    out_sp = [(s + a + c - dl * (k - 1) - 1) // st + 1 for s, a, c, k, dl, st in zip(S, lo, hi, ks, dil, stride)]

    def tap(a, t):
        sl = [slice(None)] + [slice(tt * dl, tt * dl + (o - 1) * st + 1, st)
                              for tt, dl, o, st in zip(t, dil, out_sp, stride)] + [slice(None)]
        return a[tuple(sl)]

    fc = tap(fp, tuple(k // 2 for k in ks))
    taps = list(itertools.product(*(range(k) for k in ks)))
    K = [tf.exp(-0.5 * tf.reduce_sum((fc - tap(fp, t)) ** 2, -1, keepdims=True)) * tap(mp, t) for t in taps]
    if normalize:
        s = tf.add_n(K)
        safe = tf.where(s > 0, s, tf.ones_like(s))
        K = [tf.where(s > 0, k / safe, tf.zeros_like(k)) for k in K]
    out = tf.add_n([k * tf.tensordot(tap(xp, t), w[t], 1) for k, t in zip(K, taps)])
    return out + b if b is not None else out


CASES = [
    dict(S=(7, 6), ks=(3, 3), stride=1, dil=1, padding="same", normalize=True),
    dict(S=(8, 7), ks=(2, 4), stride=2, dil=(1, 2), padding="same", normalize=False),
    dict(S=(6, 6), ks=(3, 3), stride=1, dil=2, padding="valid", normalize=True),
    dict(S=(4, 5, 4), ks=(3, 3, 2), stride=(1, 2, 1), dil=1, padding=1, normalize=True),
    dict(S=(5, 4, 4), ks=(2, 3, 3), stride=1, dil=1, padding="same", normalize=False),
]


@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_match_tf_autodiff_of_im2col(case):
    rng = np.random.default_rng(0)
    C, F, O = 3, 2, 4
    x = tf.constant(rng.standard_normal((2,) + case["S"] + (C,)))
    f = tf.constant(0.8 * rng.standard_normal((2,) + case["S"] + (F,)))
    w = tf.constant(rng.standard_normal(case["ks"] + (C, O)))
    b = tf.constant(rng.standard_normal(O))
    args = (case["stride"], case["padding"], case["dil"], case["normalize"])
    with tf.GradientTape() as tape:
        tape.watch([x, f, w, b])
        ref = tf_im2col_pac(x, f, w, b, *args)
        R = tf.constant(rng.standard_normal(ref.shape))
        loss = tf.reduce_sum(ref * R)
    ref_grads = tape.gradient(loss, [x, f, w, b])
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dil"], normalize=case["normalize"])
    got = numvox.pac_conv(x, f, w, b, **kw)  # TF tensors in, TF tensor out
    assert isinstance(got, tf.Tensor)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-9, atol=1e-9)
    grads = numvox.pac_conv_backward(R, x, f, w, **kw)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(g), r.numpy(), rtol=1e-8, atol=1e-8)
    # the differentiable TF op gives the same gradients through tf.custom_gradient
    import numvox.tf as ntf

    with tf.GradientTape() as tape:
        tape.watch([x, f, w, b])
        out = ntf.pac_conv(x, f, w, b, stride=case["stride"], padding=case["padding"],
                           dilation=case["dil"], normalize=case["normalize"])
        loss2 = tf.reduce_sum(out * R)
    for g, r in zip(tape.gradient(loss2, [x, f, w, b]), ref_grads):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-8, atol=1e-8)


def _denoise_data(n=24, size=16, seed=0):
    """Piecewise-constant images; input = image + noise, guide = the clean image."""
    rng = np.random.default_rng(seed)
    clean = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        for _ in range(3):
            y0, x0 = rng.integers(0, size - 4, 2)
            h, w = rng.integers(4, size, 2)
            clean[i, y0:y0 + h, x0:x0 + w] = rng.uniform(-1, 1)
    noisy = clean + 0.3 * rng.standard_normal(clean.shape).astype(np.float32)
    return noisy, 3.0 * clean, clean


def _model(layer_cls=None, dtype=None):
    layer_cls = layer_cls or numvox.keras.PacConv2D
    x = keras.Input((16, 16, 1))
    g = keras.Input((16, 16, 1))
    h = layer_cls(4, 3, normalize=True, name="pac1", dtype=dtype)([x, g])
    h = keras.layers.Activation("relu")(h)
    y = layer_cls(1, 5, normalize=True, name="pac2", dtype=dtype)([h, g])
    y = keras.layers.Activation("linear", dtype="float32")(y)
    return keras.Model([x, g], y)


def test_keras_model_trains_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    noisy, guide, clean = _denoise_data()
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    first = model.evaluate([noisy, guide], clean, verbose=0)
    hist = model.fit([noisy, guide], clean, epochs=12, batch_size=8, verbose=0)
    last = model.evaluate([noisy, guide], clean, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert last < 0.5 * first, (first, last)
    pred = model.predict([noisy, guide], verbose=0)
    path = tmp_path / "pac.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("pac1"), numvox.keras.PacConv2D)
    np.testing.assert_allclose(loaded.predict([noisy, guide], verbose=0), pred, rtol=1e-6, atol=1e-6)
    cfg = loaded.get_layer("pac2").get_config()
    assert cfg["kernel_size"] == (5, 5) and cfg["normalize"] is True and cfg["padding"] == "same"


def test_eager_and_tf_function_gradients_agree():
    rng = np.random.default_rng(1)
    layer = numvox.keras.PacConv3D(2, (3, 2, 3), strides=(1, 2, 1), padding="same", normalize=True)
    x = tf.constant(rng.standard_normal((1, 5, 6, 5, 3)), tf.float32)
    g = tf.constant(rng.standard_normal((1, 5, 6, 5, 2)), tf.float32)
    layer([x, g])

    def grads(x, g):
        with tf.GradientTape() as tape:
            tape.watch([x, g])
            y = layer([x, g])
            loss = tf.reduce_sum(tf.sin(y))
        return [y] + tape.gradient(loss, [x, g] + layer.trainable_weights)

    eager = grads(x, g)
    graph = tf.function(grads)(x, g)
    assert eager[0].shape == (1, 5, 3, 5, 2)
    assert all(e is not None for e in eager)
    for a, b in zip(eager, graph):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # and they are the float64 im2col reference's gradients
    x64, g64 = tf.cast(x, tf.float64), tf.cast(g, tf.float64)
    w64, b64 = (tf.cast(v, tf.float64) for v in layer.trainable_weights)
    with tf.GradientTape() as tape:
        tape.watch([x64, g64, w64, b64])
        ref = tf_im2col_pac(x64, g64, w64, b64, (1, 2, 1), "same", 1, True)
        loss = tf.reduce_sum(tf.sin(ref))
    for a, b in zip(eager[1:], tape.gradient(loss, [x64, g64, w64, b64])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def test_mixed_float16_policy():
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(1)
        noisy, guide, clean = _denoise_data(n=8)
        model = _model()
        pac = model.get_layer("pac1")
        assert pac.compute_dtype == "float16" and pac.kernel.dtype == "float32"
        out = pac([tf.constant(noisy), tf.constant(guide)])
        assert out.dtype == tf.float16
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
        hist = model.fit([noisy, guide], clean, epochs=4, batch_size=8, verbose=0)
        assert np.all(np.isfinite(hist.history["loss"]))
        assert hist.history["loss"][-1] < hist.history["loss"][0]
    finally:
        keras.config.set_dtype_policy(old)


def test_layer_errors():
    with pytest.raises(ValueError, match="padding"):
        numvox.keras.PacConv2D(2, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        numvox.keras.PacConv2D(2, (3, 3, 3))
    layer = numvox.keras.PacConv2D(2, 3)
    with pytest.raises(ValueError, match=r"\[x, guide\]"):
        layer(tf.zeros((1, 5, 5, 1)))
    with pytest.raises(ValueError, match="rank 4"):
        numvox.keras.PacConv2D(2, 3)([tf.zeros((1, 5, 5, 5, 1)), tf.zeros((1, 5, 5, 5, 1))])


def test_import_numvox_does_not_import_tensorflow():
    code = "import sys, numvox; numvox.pac_conv; assert 'tensorflow' not in sys.modules, 'tf imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
