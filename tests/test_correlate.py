"""numvox.correlate_batch against float64 per-pair scipy.signal.correlate / skimage references."""

import numpy as np
import pytest
import scipy.signal
from conftest import SIMULATED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import ref_correlate, ref_ncc

import numvox
from numvox.correlate import _direct, _fft, _rules

MODES = ("full", "same", "valid")


# ---------------------------------------------------------------------------------------------
# independent references (float64, per pair, obviously correct)
def assert_close(got, ref, dtype):
    got = np.asarray(got, dtype=np.float64)
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    tol = 1e-5 if dtype == np.float64 else 1e-4
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max()) if ref.size else 0.0
    assert err <= tol * scale, f"max error {err:.3g} > {tol} x {scale:.3g}"


def check_reduce(result, ref, reduce, dtype):
    N, K = ref.shape[:2]
    flat = ref.reshape(N, K, -1)
    if reduce == "max":
        assert_close(result, flat.max(-1), dtype)
        return
    values, positions = (np.asarray(r) for r in result)
    assert positions.dtype == np.int64 and positions.shape == (N, K, ref.ndim - 2)
    assert_close(values, flat.max(-1), dtype)
    scale = max(1.0, float(np.abs(ref).max()))
    tol = (1e-5 if dtype == np.float64 else 1e-4) * scale
    for n in range(N):
        for k in range(K):
            pos = tuple(positions[n, k])
            assert ref[(n, k) + pos] >= flat[n, k].max() - tol


# ---------------------------------------------------------------------------------------------
@st.composite
def problems(draw):
    nd = draw(st.integers(1, 3 if SIMULATED else 4))
    limit = {1: 12, 2: 7, 3: 5, 4: 3}[nd] if not SIMULATED else {1: 6, 2: 4, 3: 3}[nd]
    chan = nd >= 2 and draw(st.booleans())
    mode = draw(st.sampled_from(MODES))
    S = [draw(st.integers(1, limit)) for _ in range(nd)]
    s = [draw(st.integers(1, S[d] if mode == "valid" else S[d] + 2)) for d in range(nd)]
    if chan:
        s[-1] = S[-1]
    N = draw(st.integers(1, 2 if SIMULATED else 3))
    K = draw(st.integers(1, 2 if SIMULATED else 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((N, *S))
    filters = rng.standard_normal((K, *s))
    return images, filters, mode, (-1 if chan else None)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=problems(), dtype=st.sampled_from([np.float32, np.float64]),
       reduce=st.sampled_from([None, "max", "argmax"]), method=st.sampled_from(["direct", "fft"]))
def test_matches_scipy(backend, problem, dtype, reduce, method):
    images, filters, mode, ca = problem
    images, filters = images.astype(dtype), filters.astype(dtype)
    if backend == "cuda":
        method = "direct"
    ref = ref_correlate(images, filters, mode, ca)
    got = numvox.correlate_batch(images, filters, mode=mode, channel_axis=ca, reduce=reduce, method=method,
                                 backend=backend)
    if reduce is None:
        assert np.asarray(got).dtype == dtype
        assert_close(got, ref, dtype)
    else:
        check_reduce(got, ref, reduce, dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ca", [None, -1, 1])
def test_both_channel_semantics_4d_items(backend, mode, ca):
    rng = np.random.default_rng(1)
    shape = (2, 3, 4, 2, 3) if not SIMULATED else (1, 3, 2, 2, 2)
    fshape = (2, 2, 3, 2, 3) if not SIMULATED else (2, 2, 2, 2, 2)
    images = rng.standard_normal(shape)
    filters = rng.standard_normal(fshape)
    if ca == 1:
        filters = rng.standard_normal((fshape[0], shape[1]) + fshape[2:])
    ref = ref_correlate(images, filters, mode, ca)
    for method in (["direct"] if backend == "cuda" else ["direct", "fft"]):
        got = numvox.correlate_batch(images, filters, mode=mode, channel_axis=ca, method=method, backend=backend)
        assert_close(got, ref, np.float64)
        check_reduce(numvox.correlate_batch(images, filters, mode=mode, channel_axis=ca, method=method,
                                            reduce="argmax", backend=backend), ref, "argmax", np.float64)


def test_seed_problem_small():
    """The seed's own computation: max of correlate(u, v, 'same', method='fft') per pair."""
    rng = np.random.default_rng(2)
    images = rng.random((3, 20, 20, 3))
    filters = rng.random((4, 20, 20, 3))
    ref = np.array([[np.max(scipy.signal.correlate(u, v, mode="same", method="fft")) for v in filters]
                    for u in images])
    for dtype in (np.float64, np.float32):
        got = numvox.correlate_batch(images.astype(dtype), filters.astype(dtype), reduce="max")
        assert_close(got, ref, dtype)


def test_methods_agree_float32():
    rng = np.random.default_rng(3)
    images = rng.random((3, 24, 20, 3), dtype=np.float32)
    filters = rng.random((5, 7, 5, 3), dtype=np.float32)
    for ca in (None, -1):
        for mode in MODES:
            d = numvox.correlate_batch(images, filters, mode=mode, channel_axis=ca, method="direct")
            f = numvox.correlate_batch(images, filters, mode=mode, channel_axis=ca, method="fft")
            scale = np.abs(d).max()
            assert np.abs(d - f).max() <= 1e-4 * scale


# ---------------------------------------------------------------------------------------------
# normalize
@pytest.mark.parametrize("shape,tshape", [((17, 13), (5, 4)), ((9, 8, 7), (3, 4, 2))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normalize_matches_match_template(backend, shape, tshape, dtype):
    from skimage.feature import match_template

    if SIMULATED:
        shape, tshape = tuple(min(x, 6) for x in shape), tuple(min(x, 3) for x in tshape)
    rng = np.random.default_rng(4)
    images = rng.random((2, *shape)).astype(dtype)
    images[1, :3] = 0.5  # a constant region: zero-variance windows give 0
    filters = rng.random((3, *tshape)).astype(dtype)
    ref = np.array([[match_template(x.astype(np.float64), f.astype(np.float64)) for f in filters] for x in images])
    for method in (["direct"] if backend == "cuda" else ["direct", "fft"]):
        got = numvox.correlate_batch(images, filters, mode="valid", normalize=True, method=method, backend=backend)
        assert_close(got, ref, dtype)
        check_reduce(numvox.correlate_batch(images, filters, mode="valid", normalize=True, method=method,
                                            reduce="argmax", backend=backend), ref, "argmax", dtype)


@pytest.mark.parametrize("mode", ["same", "full"])
def test_normalize_padded_modes(backend, mode):
    rng = np.random.default_rng(5)
    images = rng.random((2, 6, 5))
    filters = rng.random((2, 3, 2))
    ref = np.array([[ref_ncc(x, f, mode) for f in filters] for x in images])
    for method in (["direct"] if backend == "cuda" else ["direct", "fft"]):
        got = numvox.correlate_batch(images, filters, mode=mode, normalize=True, method=method, backend=backend)
        assert_close(got, ref, np.float64)


def test_normalize_channels():
    """channel_axis with normalize: Pearson over the whole (window x channels) block."""
    rng = np.random.default_rng(6)
    images = rng.random((2, 7, 6, 3))
    filters = rng.random((2, 3, 3, 3))
    ref = np.array([[ref_ncc(x, f, "valid")[..., 0] for f in filters] for x in images])
    for method in ("direct", "fft"):
        got = numvox.correlate_batch(images, filters, mode="valid", channel_axis=-1, normalize=True, method=method)
        assert_close(got, ref, np.float64)


# ---------------------------------------------------------------------------------------------
# ties, layouts, dtypes, out=, blocking
def test_argmax_first_occurrence_on_ties(backend):
    images = np.ones((2, 5, 6), dtype=np.float32)
    filters = np.ones((2, 2, 3), dtype=np.float32)
    for method in (["direct"] if backend == "cuda" else ["direct", "fft"]):
        for mode in MODES:
            ref = ref_correlate(images, filters, mode)
            first = np.unravel_index(np.argmax(ref[0, 0]), ref.shape[2:])
            vals, pos = numvox.correlate_batch(images, filters, mode=mode, reduce="argmax", method=method,
                                               backend=backend)
            if method == "direct":  # exact sums of ones: exact ties
                assert tuple(pos[0, 0]) == tuple(int(i) for i in first)
            assert np.allclose(vals, ref.reshape(2, 2, -1).max(-1))


def test_layouts_and_readonly(backend):
    rng = np.random.default_rng(7)
    base = rng.standard_normal((4, 9, 8, 3))
    filt = rng.standard_normal((3, 3, 4, 3))
    views = [
        base[::2],
        np.asfortranarray(base),
        base[:, ::-1, :, ::-1],
        np.moveaxis(np.ascontiguousarray(np.moveaxis(base, -1, 1)), 1, -1),
    ]
    ro = base.copy()
    ro.setflags(write=False)
    views.append(ro)
    for v in views:
        for ca in (None, -1):
            ref = ref_correlate(v, filt, "same", ca)
            methods = ["direct"] if backend == "cuda" else ["direct", "fft"]
            for method in methods:
                got = numvox.correlate_batch(v, filt[:, ::-1], mode="same", channel_axis=ca, method=method,
                                             backend=backend)
                assert_close(got, ref_correlate(v, filt[:, ::-1], "same", ca), np.float64)
            del ref
        if backend == "cuda":
            break  # one layout is enough in the simulator


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision(half):
    dtype = np.float16 if half == "float16" else pytest.importorskip("ml_dtypes").bfloat16
    rng = np.random.default_rng(8)
    images = rng.standard_normal((2, 12, 10)).astype(dtype)
    filters = rng.standard_normal((3, 3, 3)).astype(dtype)
    ref = ref_correlate(images.astype(np.float64), filters.astype(np.float64), "same")
    for method in ("direct", "fft"):
        got = numvox.correlate_batch(images, filters, method=method)
        assert got.dtype == np.float32
        assert_close(got, ref, np.float32)


def test_integer_and_mixed_inputs():
    rng = np.random.default_rng(9)
    images = rng.integers(0, 255, (2, 10, 9), dtype=np.uint8)
    filters = rng.standard_normal((2, 3, 3)).astype(np.float32)
    ref = ref_correlate(images, filters, "valid")
    got = numvox.correlate_batch(images, filters, mode="valid", method="direct")
    assert got.dtype == np.float64
    assert_close(got, ref, np.float64)
    got = numvox.correlate_batch(images.astype(np.int32), filters.astype(np.float64), mode="valid", method="fft")
    assert_close(got, ref, np.float64)


def test_out_argument():
    rng = np.random.default_rng(10)
    images = rng.random((2, 8, 8), dtype=np.float32)
    filters = rng.random((3, 3, 3), dtype=np.float32)
    out = np.empty((2, 3, 8, 8), dtype=np.float32)
    assert numvox.correlate_batch(images, filters, out=out) is out
    assert_close(out, ref_correlate(images, filters, "same"), np.float32)
    vals = np.empty((2, 3), dtype=np.float32)
    pos = np.empty((2, 3, 2), dtype=np.int64)
    v, p = numvox.correlate_batch(images, filters, reduce="argmax", out=(vals, pos))
    assert v is vals and p is pos
    with pytest.raises(ValueError, match="shape"):
        numvox.correlate_batch(images, filters, out=np.empty((2, 3, 8, 7), dtype=np.float32))
    with pytest.raises(TypeError, match="pair"):
        numvox.correlate_batch(images, filters, reduce="argmax", out=vals)


def test_blocks_bounded(monkeypatch):
    """Tiny block budgets force many blocks; results must not change."""
    rng = np.random.default_rng(11)
    images = rng.random((5, 10, 9), dtype=np.float32)
    filters = rng.random((7, 4, 3), dtype=np.float32)
    ref = ref_correlate(images, filters, "same")
    monkeypatch.setattr(_fft, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(_direct, "DIRECT_BLOCK_BYTES", 1024)
    for method in ("direct", "fft"):
        assert_close(numvox.correlate_batch(images, filters, method=method), ref, np.float32)
        check_reduce(numvox.correlate_batch(images, filters, method=method, reduce="argmax"), ref, "argmax",
                     np.float32)
        got = numvox.correlate_batch(images, filters, method=method, normalize=True, mode="valid")
        assert got.shape == (5, 7, 7, 7)


def test_auto_method_choice():
    small = _rules.geometry((16, 64, 64, 64, 1), (32, 3, 3, 3, 1), "same", -1)
    big = _rules.geometry((40, 96, 96, 3), (50, 96, 96, 3), "same", None)
    assert _rules.choose_method(small, False) == "direct"
    assert _rules.choose_method(big, False) == "fft"


SPEC_IMAGES, SPEC_FILTERS = (2, 7, 6, 5), (3, 3, 2, 4)


def _spec_case(ca):
    """Inputs of shapes ``SPEC_*`` with equal channel counts along ``ca`` (axis lengths all differ,
    so that a wrong channel axis shows in the output shape)."""
    fshape = list(SPEC_FILTERS)
    if ca is not None:
        fshape[ca] = SPEC_IMAGES[ca]
    rng = np.random.default_rng(17)
    return rng.random(SPEC_IMAGES, dtype=np.float32), rng.random(tuple(fshape), dtype=np.float32)


def _result_specs(result):
    results = result if isinstance(result, tuple) else (result,)
    return [(list(r.shape), np.dtype(r.dtype)) for r in results]


@pytest.mark.parametrize("reduce", [None, "max", "argmax"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ca", [None, 1, 2, 3, -1, -2, -3])
def test_output_specs_match_results(ca, mode, reduce):
    """The static shape rule (OPS, used by numvox.tf) gives the shapes and dtypes of the actual
    results, and with unknown sizes (None) it keeps every size that does not depend on them."""
    (op,) = numvox.correlate.OPS
    assert op.name == "correlate_batch" and op.function is numvox.correlate_batch
    assert op.arrays == ("images", "filters")
    images, filters = _spec_case(ca)
    opts = {"mode": mode, "channel_axis": ca, "reduce": reduce}
    shapes = {"images": list(images.shape), "filters": list(filters.shape)}
    dtypes = {"images": images.dtype, "filters": np.dtype(np.float64)}
    for method in ("direct", "fft"):
        got = numvox.correlate_batch(images, filters.astype(np.float64), method=method, **opts)
        specs = op.output_specs(shapes, dtypes, opts)
        assert [(shape, np.dtype(dtype)) for shape, dtype in specs] == _result_specs(got)
    # unknown sizes: each output size is None exactly where it depends on an unknown input size
    ax = None if ca is None else ca % len(SPEC_IMAGES)
    spatial = [a for a in range(1, len(SPEC_IMAGES)) if a != ax]
    for unknown in range(len(SPEC_IMAGES)):
        partial = {"images": list(shapes["images"]), "filters": list(shapes["filters"])}
        partial["images"][unknown] = None
        expect = [list(shape) for shape, _ in specs]
        if unknown == 0:
            for shape in expect:
                shape[0] = None
        elif unknown in spatial and reduce is None:
            expect[0][2 + spatial.index(unknown)] = None
        assert [shape for shape, _ in op.output_specs(partial, dtypes, opts)] == expect
    # unknown rank
    unknown_rank = op.output_specs({"images": None, "filters": shapes["filters"]}, dtypes, opts)
    assert unknown_rank[0][0] == (None if reduce is None else [None, shapes["filters"][0]])
    if reduce == "argmax":
        assert unknown_rank[1][0] == [None, shapes["filters"][0], None]


@pytest.mark.parametrize("reduce", [None, "max", "argmax"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ca", [None, 1, -1])
def test_output_specs_match_dask_results(ca, mode, reduce):
    """The Dask driver's lazy results have the shapes and dtypes of the static rule too."""
    da = pytest.importorskip("dask.array")
    images, filters = _spec_case(ca)
    opts = {"mode": mode, "channel_axis": ca, "reduce": reduce}
    specs = numvox.correlate.OPS[0].output_specs(
        {"images": list(images.shape), "filters": list(filters.shape)},
        {"images": images.dtype, "filters": filters.dtype}, opts)
    lazy = numvox.correlate_batch(da.from_array(images, chunks=1), filters, **opts)
    assert [(shape, np.dtype(dtype)) for shape, dtype in specs] == _result_specs(lazy)
    computed = tuple(r.compute() for r in lazy) if reduce == "argmax" else lazy.compute()
    assert _result_specs(computed) == _result_specs(lazy)


@pytest.mark.cuda
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("mode,ca", [("same", None), ("full", -1), ("valid", 1)])
def test_cpu_and_cuda_direct_agree(cuda_backend, mode, ca, normalize):
    """The CPU and CUDA direct kernels give the same maps, maxima and positions."""
    rng = np.random.default_rng(18)
    images = rng.standard_normal((2, 6, 5, 2))
    fshape = [3, 3, 2, 2]
    if ca is not None:
        fshape[ca] = images.shape[ca]  # equal channel counts
    filters = rng.standard_normal(fshape)
    kw = dict(mode=mode, channel_axis=ca, normalize=normalize, method="direct")
    cpu = numvox.correlate_batch(images, filters, backend="cpu", **kw)
    gpu = numvox.correlate_batch(images, filters, backend=cuda_backend, **kw)
    assert_close(gpu, cpu, np.float64)
    cpu_v, cpu_p = numvox.correlate_batch(images, filters, backend="cpu", reduce="argmax", **kw)
    gpu_v, gpu_p = numvox.correlate_batch(images, filters, backend=cuda_backend, reduce="argmax", **kw)
    assert_close(gpu_v, cpu_v, np.float64)
    np.testing.assert_array_equal(np.asarray(gpu_p), cpu_p)


def test_empty_batches():
    images = np.zeros((0, 8, 8), dtype=np.float32)
    filters = np.ones((3, 3, 3), dtype=np.float32)
    assert numvox.correlate_batch(images, filters).shape == (0, 3, 8, 8)
    assert numvox.correlate_batch(images, filters, mode="full", reduce="max").shape == (0, 3)
    v, p = numvox.correlate_batch(np.ones((2, 8, 8)), np.ones((0, 3, 3)), mode="valid", reduce="argmax")
    assert v.shape == (2, 0) and p.shape == (2, 0, 2)


def test_progress(capsys):
    rng = np.random.default_rng(12)
    images = rng.random((3, 8, 8))
    filters = rng.random((2, 3, 3))
    ref = ref_correlate(images, filters, "same")
    for method in ("direct", "fft"):
        got = numvox.correlate_batch(images, filters, method=method, progress=True)
        assert_close(got, ref, np.float64)
    assert capsys.readouterr().err  # something was drawn


def test_tensorflow_roundtrip():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(13)
    images = rng.random((2, 8, 8, 1), dtype=np.float32)
    filters = rng.random((3, 3, 3, 1), dtype=np.float32)
    got = numvox.correlate_batch(tf.constant(images), filters, channel_axis=-1)
    assert isinstance(got, tf.Tensor)
    assert_close(got.numpy(), ref_correlate(images, filters, "same", -1), np.float32)


# ---------------------------------------------------------------------------------------------
# errors
@pytest.mark.parametrize(
    "images,filters,kwargs,exc,match",
    [
        (np.ones((2, 5, 5)), np.ones((2, 3)), {}, ValueError, "same number of dimensions"),
        (np.ones((2,)), np.ones((2,)), {}, ValueError, "1-D to 4-D"),
        (np.ones((2, 2, 2, 2, 2, 2)), np.ones((2, 2, 2, 2, 2, 2)), {}, ValueError, "1-D to 4-D"),
        (np.ones((2, 5, 5, 3)), np.ones((2, 3, 3, 2)), {"channel_axis": -1}, ValueError, "channel"),
        (np.ones((2, 5, 5)), np.ones((2, 3, 3)), {"channel_axis": 0}, ValueError, "batch axis"),
        (np.ones((2, 5, 5)), np.ones((2, 3, 3)), {"channel_axis": 3}, ValueError, "out of range"),
        (np.ones((2, 5, 5)), np.ones((2, 3, 3)), {"channel_axis": 1.0}, TypeError, "channel_axis"),
        (np.ones((2, 5)), np.ones((2, 5)), {"channel_axis": -1}, ValueError, "no spatial axis"),
        (np.ones((2, 5, 0)), np.ones((2, 3, 3)), {}, ValueError, "zero-length"),
        (np.ones((2, 5, 5)), np.ones((2, 6, 3)), {"mode": "valid"}, ValueError, "valid"),
        (np.ones((2, 5, 5)), np.ones((2, 6, 6)), {"mode": "valid"}, ValueError, "valid"),
        (np.ones((2, 5, 5), complex), np.ones((2, 3, 3)), {}, TypeError, "dtype"),
        (np.ones((2, 5, 5), bool), np.ones((2, 3, 3)), {}, TypeError, "dtype"),
        (np.array([["a"]]), np.ones((2, 3)), {}, TypeError, "dtype"),
        (np.ones((2, 5, 5)), np.ones((2, 3, 3)), {"mode": "middle"}, ValueError, "mode"),
        (np.ones((2, 5, 5)), np.ones((2, 3, 3)), {"reduce": "min"}, ValueError, "reduce"),
        (np.ones((2, 5, 5)), np.ones((2, 3, 3)), {"method": "fast"}, ValueError, "method"),
        (np.ones((2, 5, 5)), np.ones((2, 3, 3)), {"normalize": "yes"}, TypeError, "normalize"),
        (np.ones((2, 5, 5)), np.ones((2, 3, 3)), {"progress": 1}, TypeError, "progress"),
        (np.ones((2, 5, 5)), np.ones((2, 3, 3)), {"reduce": "max", "out": (1, 2)}, TypeError, "single array"),
        (np.ones((2, 5, 5), np.float32) * 1e30, np.ones((2, 3, 3), np.float32) * 1e10, {}, ValueError,
         "too large"),
    ],
)
def test_errors(images, filters, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        numvox.correlate_batch(images, filters, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["images", "filters"])
def test_non_finite_rejected(backend, bad, which):
    images = np.ones((2, 5, 5), np.float32)
    filters = np.ones((2, 3, 3), np.float32)
    (images if which == "images" else filters)[1, 1, 2] = bad
    with pytest.raises(ValueError, match=f"{which} contains 1 NaN or infinite"):
        numvox.correlate_batch(images, filters, backend=backend, method="direct")


def test_non_finite_half_rejected():
    images = np.ones((2, 5, 5), np.float16)
    images[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        numvox.correlate_batch(images, np.ones((1, 2, 2), np.float16))


# ---------------------------------------------------------------------------------------------
# CLI
def test_cli(tmp_path, capsys):
    from numvox.cli import main

    rng = np.random.default_rng(14)
    images = rng.random((2, 9, 8, 3), dtype=np.float32)
    filters = rng.random((3, 4, 3, 3), dtype=np.float32)
    np.save(tmp_path / "i.npy", images)
    np.save(tmp_path / "f.npy", filters)
    out = tmp_path / "o.npy"
    assert main(["correlate", str(tmp_path / "i.npy"), str(tmp_path / "f.npy"), "-o", str(out), "--mode", "valid",
                 "--channel-axis", "-1"]) == 0
    assert_close(np.load(out), ref_correlate(images, filters, "valid", -1), np.float32)
    assert main(["correlate", str(tmp_path / "i.npy"), str(tmp_path / "f.npy"), "-o", str(out), "--reduce", "argmax",
                 "--normalize", "--progress"]) == 0
    assert np.load(out).shape == (2, 3)
    assert np.load(tmp_path / "o_positions.npy").shape == (2, 3, 3)
    np.save(tmp_path / "bad.npy", np.ones((2, 4, 4)))
    assert main(["correlate", str(tmp_path / "i.npy"), str(tmp_path / "bad.npy"), "-o", str(out)]) == 2
    assert "same number of dimensions" in capsys.readouterr().err
    assert main(["correlate", str(tmp_path / "nope.npy"), str(tmp_path / "f.npy"), "-o", str(out)]) == 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", [False, True])
def test_fft_stacked_middle_axis(mode, normalize):
    """A short middle axis is summed in the frequency domain (not transformed) by the FFT path."""
    rng = np.random.default_rng(15)
    images = rng.random((3, 9, 3, 8))
    filters = rng.random((2, 4, 2, 3))
    geom = _rules.geometry(images.shape, filters.shape, mode, None)
    assert _fft.stack_axis(geom) == 1
    if normalize:
        ref = np.array([[ref_ncc(x, f, mode) for f in filters] for x in images])
    else:
        ref = ref_correlate(images, filters, mode)
    got = numvox.correlate_batch(images, filters, mode=mode, normalize=normalize, method="fft")
    assert_close(got, ref, np.float64)
    check_reduce(numvox.correlate_batch(images, filters, mode=mode, normalize=normalize, method="fft",
                                        reduce="argmax"), ref, "argmax", np.float64)


FFT_ENGINE_PROBLEMS = [
    ((4, 13, 11, 3), (5, 13, 11, 3), None),  # stacked colour axis, as in an RGB batch
    ((3, 7, 6, 5), (4, 3, 4, 2), None),      # three transformed axes: two pruned complex steps
    ((5, 23), (6, 7), None),                 # 1-D items: the real transform only
    ((3, 9, 8, 2), (4, 4, 3, 2), -1),        # summed channel axis
]


@pytest.mark.parametrize("engine", ["scipy", "fftw"])
@pytest.mark.parametrize("ishape,fshape,ca", FFT_ENGINE_PROBLEMS)
@pytest.mark.parametrize("mode", MODES)
def test_fft_engines(monkeypatch, engine, ishape, fshape, ca, mode):
    """Each CPU FFT engine, forced, with tasks and blocks small enough to leave partial ones."""
    if engine == "fftw":
        pytest.importorskip("pyfftw")
    from numvox.correlate import _fft_engines

    monkeypatch.setenv(_fft_engines.ENV_VAR, engine)
    monkeypatch.setattr(_fft, "TASK_BYTES", 20000)
    monkeypatch.setattr(_fft, "BLOCK_BYTES", 20000)
    rng = np.random.default_rng(16)
    images, filters = rng.random(ishape), rng.random(fshape)
    ref = ref_correlate(images, filters, mode, channel_axis=ca)
    for dtype in (np.float64, np.float32):
        a, b = images.astype(dtype), filters.astype(dtype)
        assert_close(numvox.correlate_batch(a, b, mode=mode, channel_axis=ca, method="fft"), ref, dtype)
        for reduce in ("max", "argmax"):
            check_reduce(numvox.correlate_batch(a, b, mode=mode, channel_axis=ca, method="fft", reduce=reduce),
                         ref, reduce, dtype)
    if ca is None and len(ishape) == 3:
        ncc = np.array([[ref_ncc(x, f, mode) for f in filters] for x in images])
        got = numvox.correlate_batch(images, filters, mode=mode, method="fft", normalize=True, reduce="max")
        check_reduce(got, ncc, "max", np.float64)


def test_fft_engine_choice(monkeypatch):
    from numvox.correlate import _fft_engines

    monkeypatch.setenv(_fft_engines.ENV_VAR, "scipy")
    assert _fft_engines.engine_name() == "scipy"
    monkeypatch.setenv(_fft_engines.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="NUMVOX_FFT"):
        _fft_engines.engine_name()
    monkeypatch.setattr(_fft_engines, "have_pyfftw", lambda: False)
    monkeypatch.setenv(_fft_engines.ENV_VAR, "auto")
    assert _fft_engines.engine_name() == "scipy"
    monkeypatch.setenv(_fft_engines.ENV_VAR, "fftw")
    with pytest.raises(ImportError, match="pyFFTW"):
        _fft_engines.engine_name()


def test_docstring_examples():
    import doctest

    from numvox.correlate import _api as mod

    result = doctest.testmod(mod, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_progress_without_tqdm(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # "import tqdm.auto" now fails
    rng = np.random.default_rng(16)
    got = numvox.correlate_batch(rng.random((2, 6, 6)), rng.random((2, 3, 3)), progress=True, reduce="max")
    assert got.shape == (2, 2)
    err = capsys.readouterr().err
    assert "correlate_batch" in err and "100.0%" in err
