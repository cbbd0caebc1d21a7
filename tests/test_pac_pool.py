"""numvox.pac_pool / pac_pool_backward against the float64 reference of pacnet's pacpool2d."""

import numpy as np
import pytest
from conftest import SIMULATED
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference import check_directional_derivatives, ref_out_size, ref_pac_pool, ref_pads

import numvox

KINDS = ("gaussian", "inv_0.5_1", "inv_1_-1_asym", "inv_0_2_asym_fixed")


@st.composite
def problems(draw):
    d = draw(st.sampled_from([2, 3]))
    S = tuple(draw(st.integers(1, 4 if d == 3 else 7)) for _ in range(d))
    ks = tuple(draw(st.integers(1, 3)) for _ in range(d))
    stride = draw(st.sampled_from([1, 2, 3, tuple(draw(st.integers(1, 3)) for _ in range(d))]))
    dil = draw(st.sampled_from([1, 2, tuple(draw(st.integers(1, 2)) for _ in range(d))]))
    padding = draw(st.sampled_from(["same", "valid", 0, 1, tuple(draw(st.integers(0, 2)) for _ in range(d))]))
    C = draw(st.integers(1, 3))
    channel_wise = draw(st.booleans())
    F = C if channel_wise else draw(st.integers(1, 3))
    return dict(d=d, S=S, ks=ks, stride=stride, dil=dil, padding=padding, N=draw(st.integers(1, 2)), C=C, F=F,
                normalize=draw(st.booleans()), channel_wise=channel_wise, kernel=draw(st.sampled_from(KINDS)),
                seed=draw(st.integers(0, 2**31)))


def _tup(v, d):
    return (v,) * d if np.isscalar(v) else tuple(v)


def fits(p):
    dil = _tup(p["dil"], p["d"])
    lo, hi = ref_pads(p["S"], p["ks"], dil, p["padding"])
    return all(s + a + b >= dl * (k - 1) + 1 for s, a, b, k, dl in zip(p["S"], lo, hi, p["ks"], dil))


def make(p, dtype=np.float64):
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal((p["N"],) + p["S"] + (p["C"],)).astype(dtype)
    f = (0.7 * rng.standard_normal((p["N"],) + p["S"] + (p["F"],))).astype(dtype)
    return x, f


def opts(p, backend=None):
    return dict(stride=p["stride"], padding=p["padding"], dilation=p["dil"], kernel=p["kernel"],
                normalize=p["normalize"], channel_wise=p["channel_wise"], backend=backend)


def ref(p, x, f):
    return ref_pac_pool(x, f, p["ks"], p["stride"], p["padding"], p["dil"], p["normalize"], p["kernel"],
                        p["channel_wise"])


def close(got, want, rtol):
    scale = max(np.abs(want).max(), 1.0) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def directional_checks(p, backend):
    x, f = make(p)
    want = ref(p, x, f)
    rng = np.random.default_rng(p["seed"] + 1)
    R = rng.standard_normal(want.shape)
    grads = numvox.pac_pool_backward(R, x, f, p["ks"], **opts(p, backend))
    check_directional_derivatives(lambda *a: np.sum(ref(p, *a) * R), [x, f], grads, rng)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30)
@given(p=problems())
def test_forward_matches_reference(p):
    assume(fits(p))
    x, f = make(p)
    want = ref(p, x, f)
    got = numvox.pac_pool(x, f, p["ks"], **opts(p))
    assert got.dtype == np.float64 and got.shape == want.shape
    close(got, want, 1e-6)
    got32 = numvox.pac_pool(x.astype(np.float32), f.astype(np.float32), p["ks"], **opts(p))
    assert got32.dtype == np.float32
    close(got32, want, 2e-4)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=20)
@given(p=problems())
def test_backward_matches_finite_differences(p):
    assume(fits(p))
    directional_checks(p, "cpu")


def test_output_size_rule():
    p = dict(d=2, S=(9, 7), ks=(3, 2), stride=(2, 3), dil=(1, 2), padding=1, N=1, C=2, F=2, normalize=False,
             channel_wise=True, kernel="gaussian", seed=0)
    x, f = make(p)
    out = numvox.pac_pool(x, f, p["ks"], **opts(p))
    assert out.shape[1:-1] == ref_out_size(p["S"], p["ks"], p["stride"], p["dil"], 1)
    assert list(out.shape) == numvox.pac.pool_output_shape(x.shape, p["ks"], p["stride"], 1, p["dil"])
    fwd, bwd = numvox.pac.OPS[2:4]
    assert (fwd.name, fwd.function, fwd.arrays) == ("pac_pool", numvox.pac_pool, ("x", "guide", "kernel_params"))
    assert (bwd.name, bwd.arrays) == ("pac_pool_backward", ("grad_out", "x", "guide", "kernel_params"))
    o = {"kernel_size": p["ks"], "stride": p["stride"], "padding": 1, "dilation": p["dil"]}
    f32 = np.dtype(np.float32)
    assert fwd.output_specs({"x": list(x.shape), "guide": list(f.shape)}, {"x": f32, "guide": f32}, o) == \
        [(list(out.shape), f32)]
    assert fwd.output_specs({"x": [None, None, 7, 2], "guide": None}, {"x": f32}, o) == [([None, None, 3, 2], f32)]
    assert bwd.output_specs({"grad_out": None, "x": [1, 2, 3, 4], "guide": [1, 2, 3, 1]}, {}, o)[1][0] == [1, 2, 3, 1]


def test_constant_guide_is_mean_filter():
    x = np.random.default_rng(0).standard_normal((1, 6, 5, 2))
    out = numvox.pac_pool(x, np.zeros((1, 6, 5, 1)), 3, padding=0, normalize=True)
    want = np.mean([x[:, a:a + 4, b:b + 3] for a in range(3) for b in range(3)], axis=0)
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_errors():
    x = np.zeros((1, 5, 5, 2))
    with pytest.raises(ValueError, match="channel_wise=True needs one guide feature per channel"):
        numvox.pac_pool(x, np.zeros((1, 5, 5, 3)), 3, channel_wise=True)
    with pytest.raises(ValueError, match="x and guide must agree"):
        numvox.pac_pool(x, np.zeros((1, 5, 4, 2)), 3)
    with pytest.raises(ValueError, match="kernel_size"):
        numvox.pac_pool(x, x, (3, 3, 3))
    with pytest.raises(ValueError, match="kernel must be one of"):
        numvox.pac_pool(x, x, 3, kernel="inv_1")
    with pytest.raises(TypeError, match="channel_wise"):
        numvox.pac_pool(x, x, 3, channel_wise="yes")
    with pytest.raises(ValueError, match="grad_out has shape"):
        numvox.pac_pool_backward(np.zeros((1, 4, 4, 2)), x, x, 3)
    with pytest.raises(ValueError, match="kernel larger than the padded input"):
        numvox.pac_pool(x, x, 7)


@pytest.mark.cuda
def test_cuda_matches_cpu(cuda_backend):
    cases = [
        dict(d=2, S=(5, 6), ks=(3, 3), stride=1, dil=1, padding=1, normalize=True, channel_wise=False,
             kernel="gaussian"),
        dict(d=2, S=(5, 6), ks=(3, 2), stride=2, dil=(1, 2), padding=0, normalize=False, channel_wise=True,
             kernel="inv_0.5_1_asym"),
        dict(d=3, S=(3, 4, 3), ks=(3, 3, 2), stride=(1, 2, 1), dil=1, padding="same", normalize=True,
             channel_wise=True, kernel="inv_1_-1"),
    ]
    for i, c in enumerate(cases):
        p = dict(c, N=2 if not SIMULATED else 1, C=2, F=2, seed=40 + i)
        for dtype, rtol in ((np.float64, 1e-10), (np.float32, 1e-4)):
            x, f = (a.astype(dtype) for a in make(p))
            cpu = numvox.pac_pool(x, f, p["ks"], **opts(p, "cpu"))
            gpu = numvox.pac_pool(x, f, p["ks"], **opts(p, cuda_backend))
            assert gpu.dtype == cpu.dtype == dtype
            close(np.asarray(gpu), cpu, rtol)
            R = np.random.default_rng(i).standard_normal(cpu.shape).astype(dtype)
            for a, b in zip(numvox.pac_pool_backward(R, x, f, p["ks"], **opts(p, "cpu")),
                            numvox.pac_pool_backward(R, x, f, p["ks"], **opts(p, cuda_backend))):
                assert a.dtype == np.asarray(b).dtype == dtype
                close(np.asarray(b), a, rtol)
