"""Trainable alpha and lambda of the inverse PAC kernels: ``kernel_params=`` overrides the
name's values, ``kernel_params_grad=True`` of the backward functions gives their gradient
(checked against finite differences of the float64 references), the differentiable TF ops
pass it on, and the Keras layers train, save and reload two scalar weights."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import check_directional_derivatives, ref_pac_kinds, ref_pac_pool, ref_pac_transpose

import numvox


def _name(alpha, lam, asym):
    """An inverse kernel name whose alpha and lambda parse back to these exact floats."""
    return f"inv_{float(alpha)!r}_{float(lam)!r}" + ("_asym" if asym else "")


def _problem(op, d, channel_wise, rng):
    """``(arrays, options, reference)`` of a small call: ``reference(kernel)`` is the float64
    reference output for a kernel name."""
    S = (4, 5) if d == 2 else (3, 3, 4)
    f = rng.standard_normal((1, *S, 2))
    if op == "conv":
        x, w = rng.standard_normal((1, *S, 2)), rng.standard_normal((3,) * d + (2, 2))
        opts = dict(stride=(1,) * (d - 1) + (2,), padding="same")
        return (x, f, w), opts, lambda k, norm: ref_pac_kinds(x, f, w, None, opts["stride"], "same", 1, norm, k)
    if op == "transpose":
        s = (2, 3) if d == 2 else (2, 2, 2)
        x, w = rng.standard_normal((1, *s, 2)), rng.standard_normal((3,) * d + (2, 3))
        f = rng.standard_normal((1, *((a - 1) * 2 + 1 for a in s), 2))  # stride 2, padding 1, kernel 3
        opts = dict(stride=2, padding=1)
        return (x, f, w), opts, lambda k, norm: ref_pac_transpose(x, f, w, None, (2,) * d, (1,) * d, (0,) * d,
                                                                  (1,) * d, norm, k)
    x = rng.standard_normal((1, *S, 2))
    opts = dict(kernel_size=3, stride=2, padding=1, channel_wise=channel_wise)
    return (x, f), opts, lambda k, norm: ref_pac_pool(x, f, (3,) * d, 2, 1, (1,) * d, norm, k, channel_wise)


BACKWARD = {"conv": numvox.pac_conv_backward, "transpose": numvox.pac_conv_transpose_backward,
            "pool": numvox.pac_pool_backward}
FORWARD = {"conv": numvox.pac_conv, "transpose": numvox.pac_conv_transpose, "pool": numvox.pac_pool}


def _call(fns, op, args, opts, **kw):
    opts = dict(opts)
    if op == "pool":
        return fns[op](*args, opts.pop("kernel_size"), **opts, **kw)
    return fns[op](*args, **opts, **kw)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("op,channel_wise", [("conv", False), ("transpose", False), ("pool", False),
                                             ("pool", True)])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("asym", [False, True])
def test_gradient_matches_finite_differences_of_the_reference(op, channel_wise, d, normalize, asym):
    rng = np.random.default_rng([d, normalize, asym, channel_wise, len(op)])
    args, opts, ref = _problem(op, d, channel_wise, rng)
    params = np.array([0.4, 0.7]) if normalize else np.array([-0.3, 1.3])
    out = ref(_name(*params, asym), normalize)
    R = rng.standard_normal(out.shape)
    fwd = _call(FORWARD, op, args, opts, kernel=_name(1, 2, asym), kernel_params=params, normalize=normalize)
    np.testing.assert_allclose(fwd, out, rtol=1e-9, atol=1e-12)
    *grads, gkp = _call(BACKWARD, op, (R,) + args, opts, kernel=_name(1, 2, asym), kernel_params=params,
                        normalize=normalize, kernel_params_grad=True)
    assert gkp.shape == (2,) and gkp.dtype == np.float64
    plain = _call(BACKWARD, op, (R,) + args, opts, kernel=_name(*params, asym), normalize=normalize)
    for a, b in zip(grads, plain):  # the other gradients do not change
        np.testing.assert_array_equal(a, b)
    check_directional_derivatives(lambda p: np.sum(ref(_name(*p, asym), normalize) * R), [params], [gkp], rng,
                                  rtol=1e-6)


@given(alpha=st.floats(-2, 2), lam=st.floats(-3, 3), asym=st.booleans())
def test_kernel_params_override_the_name(alpha, lam, asym):
    rng = np.random.default_rng(3)
    x, f, w = rng.standard_normal((1, 5, 4, 2)), rng.standard_normal((1, 5, 4, 3)), rng.standard_normal((3, 3, 2, 2))
    got = numvox.pac_conv(x, f, w, kernel=_name(9, 9, asym) + "_fixed", kernel_params=(alpha, lam))
    np.testing.assert_array_equal(got, numvox.pac_conv(x, f, w, kernel=_name(alpha, lam, asym)))


def test_derivative_kind_is_dk_dlambda():
    from numvox.pac._kinds import derivative_kinds, tap_value

    kp = np.array([1.0, 0.3, -1.2, 0.0])
    dalpha, dlam = derivative_kinds(kp)
    for s in (0.0, 1e-3, 0.5, 4.0):
        e = 1e-6
        fd = (tap_value(s, kp + [0, 0, e, 0]) - tap_value(s, kp - [0, 0, e, 0])) / (2 * e)
        assert tap_value(s, dlam) == pytest.approx(fd, rel=1e-7)
        assert tap_value(s, dalpha) == 1.0


def test_float32_and_empty_and_errors():
    rng = np.random.default_rng(4)
    x, f, w = (rng.standard_normal(s).astype(np.float32) for s in ((1, 5, 4, 2), (1, 5, 4, 3), (3, 3, 2, 2)))
    R = rng.standard_normal((1, 5, 4, 2)).astype(np.float32)
    *_, g32 = numvox.pac_conv_backward(R, x, f, w, kernel="inv_1_2", normalize=True, kernel_params_grad=True)
    *_, g64 = numvox.pac_conv_backward(*(a.astype(np.float64) for a in (R, x, f, w)), kernel="inv_1_2",
                                       normalize=True, kernel_params_grad=True)
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)
    *_, g0 = numvox.pac_pool_backward(R[:0], x[:0], f[:0], 3, padding=1, kernel="inv_1_2", kernel_params_grad=True)
    assert g0.shape == (2,) and not g0.any()
    with pytest.raises(ValueError, match="inverse kernels"):
        numvox.pac_conv(x, f, w, kernel_params=[1.0, 2.0])
    with pytest.raises(ValueError, match="inverse kernels"):
        numvox.pac_pool_backward(R, x, f, 3, padding=1, kernel_params_grad=True)
    with pytest.raises(ValueError, match=r"kernel_params has shape \(3,\)"):
        numvox.pac_conv_transpose(x, f, w, kernel="inv_1_2", kernel_params=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="kernel_params must be finite"):
        numvox.pac_conv(x, f, w, kernel="inv_1_2", kernel_params=[np.nan, 2.0])
    with pytest.raises(TypeError, match="kernel_params"):
        numvox.pac_conv(x, f, w, kernel="inv_1_2", kernel_params=["a", "b"])
    with pytest.raises(TypeError, match="kernel_params_grad must be True or False"):
        numvox.pac_conv_backward(R, x, f, w, kernel="inv_1_2", kernel_params_grad="yes")


@pytest.mark.cuda
def test_cuda_derivative_passes_match_cpu(cuda_backend):
    """The CUDA forward kernels run the derivative kinds (``dK/dalpha``, ``dK/dlambda``) as
    the CPU ones do: the gradients of alpha and lambda agree, for every operator."""
    rng = np.random.default_rng(5)
    for op, channel_wise in (("conv", False), ("transpose", False), ("pool", True)):
        args, opts, ref = _problem(op, 2, channel_wise, rng)
        R = rng.standard_normal(ref("inv_1_1", False).shape)
        for normalize, kernel in ((False, "inv_0.5_1"), (True, "inv_0.5_-1_asym")):
            got = [_call(BACKWARD, op, (R,) + args, opts, kernel=kernel, normalize=normalize, kernel_params_grad=True,
                         backend=backend)[-1] for backend in ("cpu", cuda_backend)]
            np.testing.assert_allclose(np.asarray(got[1]), got[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("in_graph", [False, True])
def test_tf_gradients_of_kernel_params_are_the_backward_functions(in_graph):
    tf = pytest.importorskip("tensorflow")
    import numvox.tf as ntf

    rng = np.random.default_rng(6)
    x, f, w = (rng.standard_normal(s).astype(np.float32) for s in ((1, 5, 4, 2), (1, 5, 4, 3), (3, 3, 2, 2)))
    b, R = rng.standard_normal(2).astype(np.float32), rng.standard_normal((1, 5, 4, 2)).astype(np.float32)
    kp = np.array([0.5, 1.5], np.float32)
    opts = dict(kernel="inv_1_2_asym", normalize=True)

    def run():
        ts = [tf.constant(a) for a in (x, f, w, b, kp)]
        with tf.GradientTape() as tape:
            tape.watch(ts)
            y = ntf.pac_conv(*ts[:4], kernel_params=ts[4], **opts)
            p = ntf.pac_pool(ts[0], ts[1], 3, kernel_params=ts[4], padding=1, **opts)
            loss = tf.reduce_sum(y * R) + tf.reduce_sum(p * ts[0])
        return y, tape.gradient(loss, ts)

    y, grads = (tf.function(run) if in_graph else run)()
    np.testing.assert_allclose(y.numpy(), numvox.pac_conv(x, f, w, b, kernel_params=kp, **opts), rtol=1e-6)
    *conv_grads, conv_kp = numvox.pac_conv_backward(R, x, f, w, kernel_params=kp, kernel_params_grad=True, **opts)
    px, pf, pool_kp = numvox.pac_pool_backward(x, x, f, 3, padding=1, kernel_params=kp, kernel_params_grad=True,
                                               **opts)
    want = [conv_grads[0] + px + numvox.pac_pool(x, f, 3, padding=1, kernel_params=kp, **opts),
            conv_grads[1] + pf, conv_grads[2], conv_grads[3], conv_kp + pool_kp]
    for got, exp in zip(grads, want):
        np.testing.assert_allclose(got.numpy(), exp, rtol=1e-5, atol=1e-5)


def _model(kernel):
    keras = pytest.importorskip("keras")
    import numvox.keras as nk

    xi, gi = keras.Input((6, 6, 2)), keras.Input((6, 6, 3))
    h = nk.PacConv2D(2, 3, normalize=True, kernel=kernel, name="conv")([xi, gi])
    up = nk.PacConvTranspose2D(2, 3, strides=2, padding=1, output_padding=1, kernel=kernel, name="up")(
        [h, keras.layers.UpSampling2D(2)(gi)])
    down = keras.layers.AveragePooling2D(2)(up)
    return keras.Model([xi, gi], nk.PacPool2D(3, padding=1, kernel=kernel, name="pool")([down, gi]))


def _kernel_weights(model):
    return {w.path: float(w.numpy()) for w in model.weights if w.path.split("/")[-1] in ("kernel_alpha",
                                                                                            "kernel_lambda")}


def test_keras_layers_train_save_and_reload_alpha_and_lambda(tmp_path):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
    g = rng.standard_normal((4, 6, 6, 3)).astype(np.float32)
    y = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
    model = _model("inv_1_2")
    before = _kernel_weights(model)
    assert before == {f"{layer}/{name}": value for layer in ("conv", "up", "pool")
                      for name, value in (("kernel_alpha", 1.0), ("kernel_lambda", 2.0))}
    assert all(w.trainable and w.dtype == "float32" for w in model.weights if "kernel_" in w.path)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit([x, g], y, epochs=3, verbose=0)
    after = _kernel_weights(model)
    assert all(after[k] != before[k] for k in before), (before, after)
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path)
    assert _kernel_weights(again) == after
    np.testing.assert_allclose(again.predict([x, g], verbose=0), model.predict([x, g], verbose=0), rtol=1e-6)


@pytest.mark.parametrize("kernel", ["inv_1_2_fixed", "inv_0.5_-1_asym_fixed", "gaussian"])
def test_fixed_and_gaussian_layers_have_no_kernel_weights(kernel):
    model = _model(kernel)
    assert _kernel_weights(model) == {}
    assert len(model.trainable_weights) == 4  # kernel and bias of conv and up


def test_kernel_weights_stay_float32_under_mixed_precision():
    tf = pytest.importorskip("tensorflow")
    import numvox.keras as nk

    rng = np.random.default_rng(8)
    x = tf.constant(rng.standard_normal((1, 5, 5, 2)).astype(np.float16))
    g = tf.constant(rng.standard_normal((1, 5, 5, 1)).astype(np.float16))
    for layer in (nk.PacConv2D(3, 3, kernel="inv_0.5_1.5", dtype="mixed_float16"),
                  nk.PacPool2D(3, padding=1, kernel="inv_0.5_1.5", dtype="mixed_float16")):
        with tf.GradientTape() as tape:
            out = layer([x, g])
            loss = tf.reduce_sum(tf.cast(out, tf.float32))
        assert out.dtype == tf.float16
        grads = tape.gradient(loss, [layer.kernel_alpha, layer.kernel_lambda])
        assert layer.kernel_alpha.dtype == layer.kernel_lambda.dtype == "float32"
        assert all(gr.dtype == tf.float32 and np.isfinite(gr.numpy()) and gr.numpy() != 0 for gr in grads)
