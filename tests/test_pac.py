"""numvox.pac_conv / pac_conv_backward against a float64 NumPy reference of the definition."""

import numpy as np
import pytest
from conftest import SIMULATED
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference import ref_pac, ref_pac_kinds, ref_pads

import numvox

# -- strategies -----------------------------------------------------------------------------
KINDS = ("gaussian", "inv_0.5_1", "inv_1_-1", "inv_0_2_asym", "inv_0.2_-0.5_asym_fixed")


@st.composite
def problems(draw, small=False):
    d = draw(st.sampled_from([2, 3]))
    maxs = (4 if d == 3 else 6) if small else (5 if d == 3 else 9)
    S = tuple(draw(st.integers(1, maxs)) for _ in range(d))
    ks = tuple(draw(st.integers(1, 3 if d == 3 else 4)) for _ in range(d))
    stride = draw(st.sampled_from([1, 2, tuple(draw(st.integers(1, 2)) for _ in range(d))]))
    dil = draw(st.sampled_from([1, 2, tuple(draw(st.integers(1, 2)) for _ in range(d))]))
    padding = draw(st.sampled_from(["same", "valid", 0, 1, 2, tuple(draw(st.integers(0, 2)) for _ in range(d))]))
    N = draw(st.integers(1, 2))
    C, F, O = (draw(st.integers(1, 3)) for _ in range(3))
    normalize = draw(st.booleans())
    use_bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31))
    kernel = draw(st.sampled_from(KINDS))
    return dict(d=d, S=S, ks=ks, stride=stride, dil=dil, padding=padding, N=N, C=C, F=F, O=O,
                normalize=normalize, use_bias=use_bias, seed=seed, kernel=kernel)


def fits(p):
    lo, hi = ref_pads(p["S"], p["ks"], _tup(p["dil"], p["d"]), p["padding"])
    dil = _tup(p["dil"], p["d"])
    return all(s + a + b >= dl * (k - 1) + 1 for s, a, b, k, dl in zip(p["S"], lo, hi, p["ks"], dil))


def _tup(v, d):
    return (v,) * d if np.isscalar(v) else tuple(v)


def make(p, dtype=np.float64, guide_scale=0.7):
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal((p["N"],) + p["S"] + (p["C"],)).astype(dtype)
    f = (guide_scale * rng.standard_normal((p["N"],) + p["S"] + (p["F"],))).astype(dtype)
    w = rng.standard_normal(p["ks"] + (p["C"], p["O"])).astype(dtype)
    b = rng.standard_normal(p["O"]).astype(dtype) if p["use_bias"] else None
    return x, f, w, b


def kw(p, backend):
    return dict(stride=p["stride"], padding=p["padding"], dilation=p["dil"], normalize=p["normalize"],
                kernel=p.get("kernel", "gaussian"), backend=backend)


def ref_of(p, x, f, w, b):
    return ref_pac_kinds(x, f, w, b, p["stride"], p["padding"], p["dil"], p["normalize"], p.get("kernel", "gaussian"))


def close(got, ref, rtol):
    scale = max(np.abs(ref).max(), 1.0) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)


# -- forward --------------------------------------------------------------------------------
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=problems(small=SIMULATED))
def test_forward_matches_reference_float64(p, backend):
    assume(fits(p))
    x, f, w, b = make(p)
    got = numvox.pac_conv(x, f, w, b, **kw(p, backend))
    ref = ref_of(p, x, f, w, b)
    assert got.dtype == np.float64 and got.shape == ref.shape
    close(got, ref, 1e-9)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=problems(small=SIMULATED))
def test_forward_matches_reference_float32(p, backend):
    assume(fits(p))
    x, f, w, b = make(p, np.float32)
    got = numvox.pac_conv(x, f, w, b, **kw(p, backend))
    ref = ref_of(p, x, f, w, b)
    assert got.dtype == np.float32 and got.shape == ref.shape
    close(got, ref, 1e-4)


def test_forward_fixed_cases(backend):
    """Even/odd kernels, strides, dilations and every padding kind, 2-D and 3-D."""
    rng = np.random.default_rng(1)
    cases = [
        ((7, 6), (2, 2), 1, 1, "same"), ((7, 6), (4, 3), 2, 1, "same"), ((8, 7), (3, 3), 1, 2, "valid"),
        ((6, 9), (3, 2), (2, 1), (1, 2), (1, 0)), ((4, 5, 4), (3, 3, 3), 1, 1, "same"),
        ((5, 4, 6), (2, 3, 2), 2, (1, 2, 1), "same"), ((5, 5, 5), (3, 2, 3), 1, 1, 1),
    ]
    if SIMULATED:
        cases = cases[:2] + cases[4:5]
    for S, ks, stride, dil, padding in cases:
        for normalize in (False, True):
            x = rng.standard_normal((2,) + S + (3,))
            f = rng.standard_normal((2,) + S + (2,))
            w = rng.standard_normal(ks + (3, 4))
            b = rng.standard_normal(4)
            got = numvox.pac_conv(x, f, w, b, stride=stride, padding=padding, dilation=dil,
                                  normalize=normalize, backend=backend)
            close(got, ref_pac(x, f, w, b, stride, padding, dil, normalize), 1e-9)


def test_constant_guide_is_plain_convolution():
    """Constant guide: K = 1 everywhere, PAC is an ordinary (cross-)correlation."""
    from scipy.signal import correlate

    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 10, 11, 2))
    w = rng.standard_normal((3, 3, 2, 1))
    f = np.full((1, 10, 11, 4), 0.3)
    got = numvox.pac_conv(x, f, w, padding="valid")
    ref = correlate(x[0], w[..., 0], mode="valid")[..., 0]
    np.testing.assert_allclose(got[0, ..., 0], ref, rtol=1e-10, atol=1e-10)


def test_layouts_and_half_precision(backend):
    rng = np.random.default_rng(3)
    small = SIMULATED
    S = (6, 5) if small else (12, 9)
    x = rng.standard_normal((2,) + S + (3,))
    f = rng.standard_normal((2,) + S + (2,))
    w = rng.standard_normal((3, 3, 3, 2))
    ref = ref_pac(x, f, w, None, 1, "same", 1, True)
    # F-ordered, negative strides, read-only
    xf = np.asfortranarray(x)
    fr = f[:, ::-1][:, ::-1]
    fr.flags.writeable = False
    close(numvox.pac_conv(xf, fr, w, normalize=True, backend=backend), ref, 1e-9)
    # a strided view
    big = np.zeros((2,) + S + (6,))
    big[..., ::2] = x
    close(numvox.pac_conv(big[..., ::2], f, w, normalize=True, backend=backend), ref, 1e-9)
    # float16 / bfloat16 inputs: decoded in the kernels, float32 results
    import ml_dtypes

    for hdt in (np.float16, ml_dtypes.bfloat16):
        xh, fh = x.astype(hdt), f.astype(hdt)
        got = numvox.pac_conv(xh, fh, w.astype(np.float32), normalize=True, backend=backend)
        assert got.dtype == np.float32
        refh = ref_pac(xh.astype(np.float64), fh.astype(np.float64), w.astype(np.float32), None, 1, "same", 1, True)
        close(got, refh, 1e-4)


def test_empty_and_degenerate():
    w = np.ones((3, 3, 2, 4))
    out = numvox.pac_conv(np.zeros((0, 5, 5, 2)), np.zeros((0, 5, 5, 1)), w)
    assert out.shape == (0, 5, 5, 4)
    gx, gf, gw, gb = numvox.pac_conv_backward(np.zeros((0, 5, 5, 4)), np.zeros((0, 5, 5, 2)),
                                              np.zeros((0, 5, 5, 1)), w)
    assert gx.shape == (0, 5, 5, 2) and gw.shape == w.shape and not gw.any() and gb.shape == (4,)
    # F = 0: no adaptation (K = 1)
    x = np.random.default_rng(0).standard_normal((1, 5, 5, 2))
    a = numvox.pac_conv(x, np.zeros((1, 5, 5, 0)), w)
    b = numvox.pac_conv(x, np.zeros((1, 5, 5, 3)), w)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    # O = 0
    assert numvox.pac_conv(x, x, np.ones((3, 3, 2, 0))).shape == (1, 5, 5, 0)


# -- backward -------------------------------------------------------------------------------
def directional_checks(p, backend, rtol):
    x, f, w, b = make(p)
    args = (p["stride"], p["padding"], p["dil"], p["normalize"], p.get("kernel", "gaussian"))
    ref = ref_pac_kinds(x, f, w, b, *args)
    rng = np.random.default_rng(p["seed"] + 1)
    R = rng.standard_normal(ref.shape)
    gx, gf, gw, gb = numvox.pac_conv_backward(R, x, f, w, **kw(p, backend))
    assert gx.shape == x.shape and gf.shape == f.shape and gw.shape == w.shape and gb.shape == (w.shape[-1],)
    bias = b if b is not None else np.zeros(w.shape[-1])

    def L(x_, f_, w_, b_):
        return np.sum(ref_pac_kinds(x_, f_, w_, b_, *args) * R)

    eps = 1e-6
    for i, (grad, base) in enumerate(((gx, x), (gf, f), (gw, w), (gb, bias))):
        dirn = rng.standard_normal(base.shape)
        plus = [x, f, w, bias]
        minus = [x, f, w, bias]
        plus[i] = base + eps * dirn
        minus[i] = base - eps * dirn
        fd = (L(*plus) - L(*minus)) / (2 * eps)
        an = np.sum(grad * dirn)
        assert abs(fd - an) <= rtol * max(1.0, abs(fd), np.abs(grad).sum()), (i, fd, an)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p=problems(small=True))
def test_backward_matches_finite_differences(p, backend):
    assume(fits(p))
    directional_checks(p, backend, 1e-6)


def test_backward_fixed_cases(backend):
    base = dict(N=1, C=2, F=2, O=2, use_bias=True, seed=5)
    cases = [
        dict(d=2, S=(5, 6), ks=(3, 3), stride=1, dil=1, padding="same", normalize=True),
        dict(d=2, S=(6, 5), ks=(2, 4), stride=2, dil=(1, 2), padding="same", normalize=False),
        dict(d=3, S=(4, 3, 4), ks=(3, 2, 3), stride=(1, 2, 1), dil=1, padding=1, normalize=True),
        dict(d=2, S=(7, 7), ks=(3, 3), stride=2, dil=2, padding="valid", normalize=True),
    ]
    if SIMULATED:
        cases = cases[:1] + cases[2:3]
    for c in cases:
        directional_checks({**base, **c}, backend, 1e-6)


@pytest.mark.parametrize("kernel", ["gaussian", "inv_0.5_1", "inv_0_-1_asym"])
def test_backward_float32_close_to_float64(kernel):
    p = dict(d=2, S=(9, 8), ks=(3, 3), stride=1, dil=1, padding="same", N=2, C=3, F=2, O=4,
             normalize=True, use_bias=False, seed=9)
    x, f, w, _ = make(p)
    R = np.random.default_rng(0).standard_normal((2, 9, 8, 4))
    g64 = numvox.pac_conv_backward(R, x, f, w, normalize=True, kernel=kernel)
    g32 = numvox.pac_conv_backward(R.astype(np.float32), x.astype(np.float32), f.astype(np.float32),
                                   w.astype(np.float32), normalize=True, kernel=kernel)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        close(a, b, 1e-4)


@pytest.mark.parametrize("stride,dil,padding,normalize", [(1, 1, "same", False), (2, 1, "valid", True),
                                                          (1, 2, 1, True), (2, 2, "same", False)])
def test_float32_fast_exp_paths(stride, dil, padding, normalize):
    """float32 CPU path (vectorised exp, pixel-blocked kernels, 33+ output columns so that a
    row has two blocks): forward and backward against float64, with guide distances that
    span exp's whole range (kernel values from 1 down to underflow inside the image), on
    C-contiguous and non-contiguous inputs."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 70, 3))
    f = rng.standard_normal((2, 7, 70, 2)) * np.linspace(0.0, 12.0, 70)[:, None]  # far apart on the right
    w = rng.standard_normal((3, 4, 3, 5))
    b = rng.standard_normal(5)
    opts = dict(stride=stride, dilation=dil, padding=padding, normalize=normalize)
    ref = ref_pac(x, f, w, b, stride, padding, dil, normalize)
    R = rng.standard_normal(ref.shape)
    g64 = numvox.pac_conv_backward(R, x, f, w, **opts)
    x32, f32, w32, b32, R32 = (a.astype(np.float32) for a in (x, f, w, b, R))
    big = np.zeros((2, 7, 70, 6), np.float32)
    big[..., ::2] = x32
    for xx in (x32, big[..., ::2]):
        close(numvox.pac_conv(xx, f32, w32, b32, **opts), ref, 1e-4)
        for a, r in zip(numvox.pac_conv_backward(R32, xx, f32, w32, **opts), g64):
            assert a.dtype == np.float32
            close(a, r, 1e-4)


# -- kernel kinds ---------------------------------------------------------------------------
def test_reference_kinds_agree_with_gaussian_reference():
    p = dict(d=2, S=(5, 6), ks=(3, 2), stride=(1, 2), dil=(2, 1), padding="same", N=1, C=2, F=2, O=3,
             normalize=True, use_bias=True, seed=31)
    x, f, w, b = make(p)
    np.testing.assert_allclose(ref_of(p, x, f, w, b), ref_pac(x, f, w, b, (1, 2), "same", (2, 1), True), rtol=1e-12)


@pytest.mark.parametrize("kernel", ["inv_0.5_1", "inv_1_-1_asym_fixed"])
def test_kinds_on_strided_and_half_guides(kernel):
    """Non-contiguous and float16 guides (read through the guide-row buffer) give the
    contiguous guide's forward and backward."""
    p = dict(d=2, S=(7, 9), ks=(3, 3), stride=1, dil=1, padding="same", N=1, C=2, F=3, O=2,
             normalize=True, use_bias=False, seed=32)
    x, f, w, _ = make(p)
    f = f.astype(np.float16).astype(np.float64)
    R = np.random.default_rng(1).standard_normal((1, 7, 9, 2))
    base = numvox.pac_conv_backward(R, x, f, w, normalize=True, kernel=kernel)
    for guide in (np.asfortranarray(f), f.astype(np.float16)):
        got = numvox.pac_conv_backward(R, x, guide, w, normalize=True, kernel=kernel)
        for a, r in zip(got, base):
            close(a, r, 1e-9 if guide.dtype == np.float64 else 1e-5)


def test_kernel_names():
    from numvox.pac._rules import parse_kernel

    assert parse_kernel("gaussian") == ("gaussian", None, None, False, False)
    assert parse_kernel("inv_0.5_-1") == ("inv", 0.5, -1.0, False, False)
    assert parse_kernel("inv_2_4_fixed_asym") == ("inv", 2.0, 4.0, True, True)
    x = np.zeros((1, 5, 5, 1))
    for bad in ("inv_a_1", "inv_1", "inv_1_2_sym", "inv_1_2_asym_asym", "inv_nan_1", 3):
        with pytest.raises(ValueError, match="kernel must be one of"):
            numvox.pac_conv(x, x, np.ones((3, 3, 1, 1)), kernel=bad)


# -- errors ---------------------------------------------------------------------------------
def test_errors():
    x = np.zeros((1, 6, 6, 2), np.float32)
    f = np.zeros((1, 6, 6, 3), np.float32)
    w = np.zeros((3, 3, 2, 4), np.float32)
    with pytest.raises(ValueError, match="x and guide must agree"):
        numvox.pac_conv(x, np.zeros((1, 6, 5, 3)), w)
    with pytest.raises(ValueError, match="input channels"):
        numvox.pac_conv(x, f, np.zeros((3, 3, 5, 4)))
    with pytest.raises(ValueError, match="weight has shape"):
        numvox.pac_conv(x, f, np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match="5-D"):
        numvox.pac_conv(x, f, np.zeros((3, 3, 3, 2, 4)))
    with pytest.raises(ValueError, match="bias has shape"):
        numvox.pac_conv(x, f, w, np.zeros(3))
    with pytest.raises(TypeError, match="x has dtype int"):
        numvox.pac_conv(x.astype(np.int32), f, w)
    with pytest.raises(TypeError, match="guide has dtype bool"):
        numvox.pac_conv(x, f.astype(bool), w)
    with pytest.raises(ValueError, match="kernel larger than the padded input"):
        numvox.pac_conv(x, f, np.zeros((7, 7, 2, 4)), padding="valid")
    with pytest.raises(ValueError, match="kernel larger than the padded input"):
        numvox.pac_conv(x, f, w, padding="valid", dilation=3)
    with pytest.raises(ValueError, match="padding must be one of"):
        numvox.pac_conv(x, f, w, padding="full")
    with pytest.raises(ValueError, match="stride entries must be >= 1"):
        numvox.pac_conv(x, f, w, stride=0)
    with pytest.raises(ValueError, match="dilation must have 2 entries"):
        numvox.pac_conv(x, f, w, dilation=(1, 1, 1))
    with pytest.raises(ValueError, match="kernel must be one of"):
        numvox.pac_conv(x, f, w, kernel="laplacian")
    with pytest.raises(TypeError, match="normalize"):
        numvox.pac_conv(x, f, w, normalize="yes")
    bad = x.copy()
    bad[0, 1, 2, 1] = np.nan
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        numvox.pac_conv(bad, f, w)
    with pytest.raises(ValueError, match="guide contains"):
        numvox.pac_conv(x, np.full(f.shape, np.inf, np.float32), w)
    with pytest.raises(ValueError, match="weight contains"):
        numvox.pac_conv(x, f, np.full(w.shape, np.nan, np.float32))
    with pytest.raises(ValueError, match="grad_out has shape"):
        numvox.pac_conv_backward(np.zeros((1, 5, 5, 4)), x, f, w)
    with pytest.raises(ValueError, match="grad_out contains"):
        numvox.pac_conv_backward(np.full((1, 6, 6, 4), np.nan), x, f, w)


def test_huge_guide_values_stay_finite():
    """exp underflows to 0 for far-apart features: normalised output falls back to 0, not NaN."""
    x = np.ones((1, 5, 5, 1))
    f = np.arange(25.0).reshape(1, 5, 5, 1) * 1e30
    w = np.ones((3, 3, 1, 1))
    out = numvox.pac_conv(x, f, w, normalize=True)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 2, 2, 0], 1.0)  # only the centre tap survives
    g = numvox.pac_conv_backward(np.ones((1, 5, 5, 1)), x, f, w, normalize=True)
    assert all(np.isfinite(a).all() for a in g)


# -- CLI ------------------------------------------------------------------------------------
def test_cli(tmp_path, capsys):
    from numvox.cli import main

    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 6, 7, 2)).astype(np.float32)
    f = rng.standard_normal((1, 6, 7, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    for name, a in (("x", x), ("f", f), ("w", w), ("b", b)):
        np.save(tmp_path / f"{name}.npy", a)
    out = tmp_path / "out.npy"
    rc = main(["pac", str(tmp_path / "x.npy"), str(tmp_path / "f.npy"), str(tmp_path / "w.npy"),
               str(out), "--bias", str(tmp_path / "b.npy"), "--normalize", "--stride", "2",
               "--padding", "valid"])
    assert rc == 0
    np.testing.assert_allclose(np.load(out), ref_pac(x, f, w, b, 2, "valid", 1, True), rtol=1e-4, atol=1e-4)
    rc = main(["pac", str(tmp_path / "x.npy"), str(tmp_path / "f.npy"), str(tmp_path / "w.npy"),
               str(out), "--padding", "1,2", "--dilation", "1,2"])
    assert rc == 0
    np.testing.assert_allclose(np.load(out), ref_pac(x, f, w, None, 1, (1, 2), (1, 2), False), rtol=1e-4, atol=1e-4)
    rc = main(["pac", str(tmp_path / "x.npy"), str(tmp_path / "x.npy"), str(tmp_path / "w.npy"), str(out),
               "--padding", "valid"])
    assert rc == 0  # guide = x is allowed
    rc = main(["pac", str(tmp_path / "x.npy"), str(tmp_path / "missing.npy"), str(tmp_path / "w.npy"), str(out)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = main(["pac", str(tmp_path / "x.npy"), str(tmp_path / "b.npy"), str(tmp_path / "w.npy"), str(out)])
    assert rc == 2 and "guide has shape" in capsys.readouterr().err
    rc = main(["pac", str(tmp_path / "x.npy"), str(tmp_path / "f.npy"), str(tmp_path / "w.npy"), str(out),
               "--stride", "a"])
    assert rc == 2 and "stride" in capsys.readouterr().err


@pytest.mark.cuda
def test_cuda_small_tiles_and_channel_chunks(cuda_backend, monkeypatch):
    """Force tiny tiles and one channel per shared-memory chunk: many blocks, halos that
    overlap between blocks (atomics) and several chunk passes for C and F."""
    from numvox.pac import _cuda

    real_plan = _cuda.plan
    monkeypatch.setattr(_cuda, "plan", lambda geo, cap, sim, *a: (2, 3, 1, real_plan(geo, cap, sim, *a)[3]))
    for d, S, ks, stride, padding in (
        (2, (7, 8), (3, 2), 1, "same"), (3, (4, 5, 5), (2, 3, 3), (1, 2, 1), "same"),
    ):
        p = dict(d=d, S=S, ks=ks, stride=stride, dil=1, padding=padding, N=2, C=3, F=2, O=2,
                 normalize=True, use_bias=True, seed=11, kernel="inv_0.5_-1_asym" if d == 3 else "gaussian")
        x, f, w, b = make(p)
        got = numvox.pac_conv(x, f, w, b, **kw(p, cuda_backend))
        close(got, ref_of(p, x, f, w, b), 1e-9)
        directional_checks({**p, "N": 1}, cuda_backend, 1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_cuda_matches_cpu(cuda_backend, dtype, rtol):
    """Forward and backward of the CUDA kernels against the CPU kernels on the same inputs
    (2-D with stride and dilation, 3-D with even kernel sizes)."""
    for p in (
        dict(d=2, S=(6, 5), ks=(3, 2), stride=(1, 2), dil=(2, 1), padding="same", N=1, C=2, F=2, O=3,
             normalize=True, use_bias=True, seed=21),
        dict(d=3, S=(3, 4, 4), ks=(2, 3, 2), stride=1, dil=1, padding=1, N=1, C=2, F=1, O=2,
             normalize=False, use_bias=False, seed=22),
        dict(d=2, S=(5, 4), ks=(3, 3), stride=1, dil=1, padding="same", N=1, C=2, F=2, O=2,
             normalize=True, use_bias=False, seed=23, kernel="inv_0.5_1"),
        dict(d=3, S=(3, 3, 4), ks=(3, 2, 2), stride=1, dil=(1, 1, 2), padding=1, N=1, C=1, F=2, O=2,
             normalize=False, use_bias=True, seed=24, kernel="inv_1_-1_asym"),
    ):
        x, f, w, b = (None if a is None else a.astype(dtype) for a in make(p))
        cpu = numvox.pac_conv(x, f, w, b, **kw(p, "cpu"))
        gpu = numvox.pac_conv(x, f, w, b, **kw(p, cuda_backend))
        assert gpu.dtype == cpu.dtype == dtype and gpu.shape == cpu.shape
        close(np.asarray(gpu), cpu, rtol)
        R = np.random.default_rng(p["seed"]).standard_normal(cpu.shape).astype(dtype)
        for g_cpu, g_gpu in zip(numvox.pac_conv_backward(R, x, f, w, **kw(p, "cpu")),
                                numvox.pac_conv_backward(R, x, f, w, **kw(p, cuda_backend))):
            assert g_gpu.dtype == g_cpu.dtype == dtype and g_gpu.shape == g_cpu.shape
            close(np.asarray(g_gpu), g_cpu, rtol)


# -- shape rules (OPS) --------------------------------------------------------------------------
def test_output_shape_and_ops_specs():
    from numvox.pac import OPS, output_shape

    assert output_shape([2, 9, 7, 3], (3, 3), 2, "same", 1, 4) == [2, 5, 4, 4]
    assert output_shape([None, None, 7, 3], (3, 3), 1, "valid", (1, 2), None) == [None, None, 3, None]
    assert output_shape([1, 5, 6, 7, 2], (3, None, 2), 1, 1, 1, 8) == [1, 5, None, 8, 8]
    assert output_shape(None, (3, 3)) is None
    with pytest.raises(ValueError, match="kernel larger"):
        output_shape([1, 2, 8, 1], (5, 5), padding="valid")
    fwd, bwd = OPS[:2]
    assert (fwd.name, fwd.function, fwd.arrays) == ("pac_conv", numvox.pac_conv,
                                                    ("x", "guide", "weight", "bias", "kernel_params"))
    assert (bwd.name, bwd.function, bwd.arrays) == ("pac_conv_backward", numvox.pac_conv_backward,
                                                    ("grad_out", "x", "guide", "weight", "kernel_params"))
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    shapes = {"x": [2, None, 9, 3], "guide": [2, None, 9, 1], "weight": [3, 3, 3, 5], "bias": None}
    dtypes = {"x": f32, "guide": np.dtype(np.float16), "weight": f32, "bias": f32}
    assert fwd.output_specs(shapes, dtypes, {"stride": 2}) == [([2, None, 5, 5], f32)]
    assert fwd.output_specs({**shapes, "x": None}, {**dtypes, "weight": f64}, {}) == [(None, f64)]
    specs = bwd.output_specs({"grad_out": None, **shapes}, dtypes, {})
    assert specs == [(shapes["x"], f32), (shapes["guide"], f32), (shapes["weight"], f32), ([5], f32)]
    assert bwd.output_specs({"grad_out": None, **shapes}, dtypes, {"kernel_params_grad": True}) == specs + [([2], f32)]
    assert bwd.output_specs({"grad_out": None, **shapes, "weight": None}, dtypes, {})[3] == (None, f32)
    # the runtime result has the rule's shape
    rng = np.random.default_rng(3)
    x, f, w = rng.standard_normal((1, 7, 6, 2)), rng.standard_normal((1, 7, 6, 1)), rng.standard_normal((2, 3, 2, 3))
    for opts in ({}, {"stride": 2, "padding": "valid"}, {"dilation": (2, 1), "padding": (1, 0)}):
        spec = fwd.output_specs({"x": list(x.shape), "guide": list(f.shape), "weight": list(w.shape), "bias": None},
                                {"x": x.dtype, "guide": f.dtype, "weight": w.dtype, "bias": None}, opts)
        out = numvox.pac_conv(x, f, w, **opts)
        assert [(list(out.shape), out.dtype)] == spec
