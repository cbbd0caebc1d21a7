"""numvox.pac_conv_transpose / _backward against the float64 reference of pacnet's
pacconv_transpose2d + packernel2d(transposed=True)."""

import numpy as np
import pytest
from conftest import SIMULATED
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference import check_directional_derivatives, ref_pac_transpose, ref_pac_transpose_size

import numvox

KINDS = ("gaussian", "inv_0.5_1", "inv_1_-1_asym", "inv_0_2_asym_fixed")


@st.composite
def problems(draw):
    d = draw(st.sampled_from([2, 3]))
    s = tuple(draw(st.integers(1, 3 if d == 3 else 4)) for _ in range(d))
    ks = tuple(draw(st.integers(1, 3 if d == 3 else 4)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(d))
    padding = tuple(draw(st.integers(0, (k - 1) * dl // 2)) for k, dl in zip(ks, dil))
    output_padding = tuple(draw(st.integers(0, sd - 1)) for sd in stride)
    return dict(d=d, s=s, ks=ks, stride=stride, dil=dil, padding=padding, output_padding=output_padding,
                N=draw(st.integers(1, 2)), C=draw(st.integers(1, 3)), F=draw(st.integers(1, 2)),
                O=draw(st.integers(1, 3)), normalize=draw(st.booleans()), use_bias=draw(st.booleans()),
                kernel=draw(st.sampled_from(KINDS)), seed=draw(st.integers(0, 2**31)))


def out_size(p):
    return ref_pac_transpose_size(p["s"], p["ks"], p["stride"], p["padding"], p["output_padding"], p["dil"])


def make(p, dtype=np.float64):
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal((p["N"],) + p["s"] + (p["C"],)).astype(dtype)
    f = (0.7 * rng.standard_normal((p["N"],) + out_size(p) + (p["F"],))).astype(dtype)
    w = rng.standard_normal(p["ks"] + (p["C"], p["O"])).astype(dtype)
    b = rng.standard_normal(p["O"]).astype(dtype) if p["use_bias"] else None
    return x, f, w, b


def opts(p, backend=None):
    return dict(stride=p["stride"], padding=p["padding"], output_padding=p["output_padding"], dilation=p["dil"],
                kernel=p["kernel"], normalize=p["normalize"], backend=backend)


def ref(p, x, f, w, b):
    return ref_pac_transpose(x, f, w, b, p["stride"], p["padding"], p["output_padding"], p["dil"], p["normalize"],
                             p["kernel"])


def close(got, want, rtol):
    scale = max(np.abs(want).max(), 1.0) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def directional_checks(p, backend):
    x, f, w, b = make(p)
    want = ref(p, x, f, w, b)
    rng = np.random.default_rng(p["seed"] + 1)
    R = rng.standard_normal(want.shape)
    grads = numvox.pac_conv_transpose_backward(R, x, f, w, **opts(p, backend))
    bias = b if b is not None else np.zeros(p["O"])
    check_directional_derivatives(lambda *a: np.sum(ref(p, *a) * R), [x, f, w, bias], grads, rng)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30)
@given(p=problems())
def test_forward_matches_reference(p):
    x, f, w, b = make(p)
    want = ref(p, x, f, w, b)
    got = numvox.pac_conv_transpose(x, f, w, b, **opts(p))
    assert got.dtype == np.float64 and got.shape == want.shape
    close(got, want, 1e-6)
    x32, f32, w32 = (a.astype(np.float32) for a in (x, f, w))
    got32 = numvox.pac_conv_transpose(x32, f32, w32, None if b is None else b.astype(np.float32), **opts(p))
    assert got32.dtype == np.float32
    close(got32, want, 2e-4)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=20)
@given(p=problems())
def test_backward_matches_finite_differences(p):
    assume(np.prod(out_size(p)) <= 200)
    directional_checks(p, "cpu")


def test_many_columns_and_half_inputs():
    """Rows wider than one block of columns (two GEMM blocks per phase), float16 inputs."""
    p = dict(d=2, s=(3, 40), ks=(4, 4), stride=(2, 2), dil=(1, 1), padding=(1, 1), output_padding=(0, 1), N=1,
             C=2, F=2, O=3, normalize=True, use_bias=True, kernel="gaussian", seed=3)
    x, f, w, b = make(p)
    close(numvox.pac_conv_transpose(x, f, w, b, **opts(p)), ref(p, x, f, w, b), 1e-9)
    xh, fh = x.astype(np.float16), f.astype(np.float16)
    got = numvox.pac_conv_transpose(xh, fh, w.astype(np.float32), b.astype(np.float32), **opts(p))
    close(got, ref(p, xh.astype(np.float64), fh.astype(np.float64), w.astype(np.float32), b), 2e-4)
    directional_checks(dict(p, s=(2, 36), kernel="inv_0.5_1"), "cpu")


def test_constant_guide_is_tf_conv2d_transpose():
    """A zero guide (zero outside too) makes every kernel value 1: the transposed PAC is a
    transposed convolution, and a TensorFlow kernel maps to ``weight`` as the docstring says."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 5, 3))
    k_tf = rng.standard_normal((3, 4, 2, 3))  # (kh, kw, O, C)
    want = tf.nn.conv2d_transpose(x, k_tf, (2, 9, 12, 2), strides=2, padding="VALID").numpy()
    weight = k_tf[::-1, ::-1].swapaxes(-1, -2)
    got = numvox.pac_conv_transpose(x, np.zeros((2, 9, 12, 1)), weight, stride=2)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_shapes_rules_and_errors():
    x, w = np.zeros((1, 4, 5, 2)), np.zeros((3, 3, 2, 4))
    assert numvox.pac.transpose_output_shape(x.shape, (3, 3), 2, 1, 1, 1, 4) == [1, 8, 10, 4]
    assert numvox.pac.transpose_output_shape([None, None, 5, 2], (3, 3), 2, 1, 0, 1, 4) == [None, None, 9, 4]
    fwd, bwd = numvox.pac.OPS[4:6]
    assert (fwd.name, fwd.function, fwd.arrays) == ("pac_conv_transpose", numvox.pac_conv_transpose,
                                                    ("x", "guide", "weight", "bias", "kernel_params"))
    assert (bwd.name, bwd.arrays) == ("pac_conv_transpose_backward",
                                      ("grad_out", "x", "guide", "weight", "kernel_params"))
    f32 = np.dtype(np.float32)
    shapes = {"x": [1, 4, 5, 2], "guide": None, "weight": [3, 3, 2, 4], "bias": None}
    assert fwd.output_specs(shapes, {"x": f32}, {"stride": 2, "padding": 1, "output_padding": 1}) == \
        [([1, 8, 10, 4], f32)]
    assert bwd.output_specs({"grad_out": None, **shapes}, {}, {})[3] == ([4], f32)
    out = numvox.pac_conv_transpose(x, np.zeros((1, 8, 10, 1)), w, stride=2, padding=1, output_padding=1)
    assert out.shape == (1, 8, 10, 4)
    with pytest.raises(ValueError, match=r"guide has shape \(1, 8, 9, 1\).*output size \(8, 10\)"):
        numvox.pac_conv_transpose(x, np.zeros((1, 8, 9, 1)), w, stride=2, padding=1, output_padding=1)
    with pytest.raises(ValueError, match="output_padding"):
        numvox.pac_conv_transpose(x, np.zeros((1, 10, 12, 1)), w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="padding of a transposed PAC"):
        numvox.pac_conv_transpose(x, np.zeros((1, 4, 5, 1)), w, padding="same")
    with pytest.raises(ValueError, match="empty output"):
        numvox.pac_conv_transpose(np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 1)), w, padding=2)
    with pytest.raises(ValueError, match="x and guide must agree in batch size"):
        numvox.pac_conv_transpose(x, np.zeros((2, 6, 7, 1)), w)
    with pytest.raises(ValueError, match="grad_out has shape"):
        numvox.pac_conv_transpose_backward(np.zeros((1, 6, 6, 4)), x, np.zeros((1, 6, 7, 1)), w)


@pytest.mark.cuda
def test_cuda_matches_cpu(cuda_backend):
    cases = [
        dict(d=2, s=(3, 3), ks=(4, 4), stride=(2, 2), dil=(1, 1), padding=(1, 1), output_padding=(0, 1),
             normalize=True, use_bias=True, kernel="gaussian"),
        dict(d=2, s=(2, 3), ks=(3, 2), stride=(3, 2), dil=(1, 2), padding=(1, 0), output_padding=(2, 1),
             normalize=True, use_bias=False, kernel="inv_0.5_1_asym"),
        dict(d=3, s=(2, 2, 2), ks=(3, 3, 2), stride=(2, 1, 2), dil=(1, 1, 1), padding=(1, 1, 0),
             output_padding=(1, 0, 0), normalize=False, use_bias=True, kernel="inv_1_-1"),
    ]
    for i, c in enumerate(cases):
        p = dict(c, N=1, C=2, F=2, O=2, seed=50 + i)
        for dtype, rtol in ((np.float64, 1e-10), (np.float32, 1e-4))[:1 if SIMULATED and i else 2]:
            x, f, w, b = (None if a is None else a.astype(dtype) for a in make(p))
            cpu = numvox.pac_conv_transpose(x, f, w, b, **opts(p, "cpu"))
            gpu = numvox.pac_conv_transpose(x, f, w, b, **opts(p, cuda_backend))
            assert gpu.dtype == cpu.dtype == dtype
            close(np.asarray(gpu), cpu, rtol)
            R = np.random.default_rng(i).standard_normal(cpu.shape).astype(dtype)
            for a, g in zip(numvox.pac_conv_transpose_backward(R, x, f, w, **opts(p, "cpu")),
                            numvox.pac_conv_transpose_backward(R, x, f, w, **opts(p, cuda_backend))):
                assert a.dtype == np.asarray(g).dtype == dtype
                close(np.asarray(g), a, rtol)
