"""numvox.aggregate_votes / numvox.heatmap_peaks against float64 NumPy references."""

import numpy as np
import pytest
from conftest import SIMULATED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import ref_peaks, ref_votes

import numvox
from numvox.cli import main as cli_main

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

SPECIALS = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38, -3e38], np.float64)


# ---------------------------------------------------------------- references (float64) ----
def check_votes(probs, offsets, backend, *, threshold=0.5, splat="nearest", layout="axis-major", **kw):
    got = numvox.aggregate_votes(probs, offsets, threshold=threshold, splat=splat, offset_layout=layout,
                                 backend=backend, **kw)
    want, mass = ref_votes(probs, offsets, threshold, splat, layout)
    got = np.asarray(got)
    assert got.dtype == np.float32 and got.shape == want.shape
    err = np.max(np.abs(got - want)) if got.size else 0.0
    assert err <= 1e-4 * mass + 1e-6, (err, mass)
    return got


# ---------------------------------------------------------------- input generation -----
def make_inputs(rng, shape, L, batch=None, *, spread=3.0, specials=0.0, dtype=np.float32):
    lead = (batch,) if batch else ()
    probs = rng.random(lead + tuple(shape) + (L + 1,))
    offsets = rng.normal(0.0, spread, lead + tuple(shape) + (3 * L,))
    if specials:
        mask = rng.random(offsets.shape) < specials
        offsets[mask] = rng.choice(SPECIALS, size=int(mask.sum()))
    return probs.astype(dtype), offsets.astype(dtype)


def arrange(a, order, rng):
    """The same values as C order, F order, a strided view or read-only."""
    if order == "F":
        return np.asfortranarray(a)
    if order == "strided":
        big = np.zeros(tuple(2 * s for s in a.shape[:-1]) + (a.shape[-1] + 1,), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape[:-1]) + (slice(1, None),)]
        view[...] = a
        return view
    if order == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    return a


DTYPES = [np.float32, np.float64, np.float16] + ([BF16] if BF16 is not None else [])
SMALL = 4 if SIMULATED else 7


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.tuples(*[st.integers(1, SMALL)] * 3),
    L=st.integers(1, 2 if SIMULATED else 3),
    batch=st.sampled_from([None, 1, 2] if SIMULATED else [None, 1, 2, 3]),
    threshold=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    splat=st.sampled_from(["nearest", "linear"]),
    layout=st.sampled_from(["axis-major", "landmark-major"]),
    dtype=st.sampled_from(DTYPES),
    order=st.sampled_from(["C", "F", "strided", "readonly"]),
    specials=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_reference(backend, shape, L, batch, threshold, splat, layout, dtype, order, specials, seed):
    rng = np.random.default_rng(seed)
    probs, offsets = make_inputs(rng, shape, L, batch, spread=max(shape), specials=specials, dtype=dtype)
    if threshold == 1.0:  # make some probabilities exactly 1
        probs[..., 1:][rng.random(probs[..., 1:].shape) < 0.3] = 1
    check_votes(arrange(probs, order, rng), arrange(offsets, order, rng), backend,
                threshold=threshold, splat=splat, layout=layout)


@pytest.mark.parametrize("splat", ["nearest", "linear"])
def test_threshold_zero_counts_zero_probability_votes_and_drops_nan(backend, splat):
    rng = np.random.default_rng(1)
    probs, offsets = make_inputs(rng, (3, 4, 5), 2)
    probs[0, 0, 0, 1] = 0.0
    probs[1, 1, 1, 2] = np.nan
    probs[2, 2, 2, 1] = -0.25  # below threshold 0: does not vote
    got = check_votes(probs, offsets, backend, threshold=0.0, splat=splat)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("splat", ["nearest", "linear"])
def test_huge_and_nonfinite_offsets_write_nothing(backend, splat):
    shape = (3, 4, 5)
    probs = np.ones(shape + (3,), np.float32)
    for value in SPECIALS:
        offsets = np.full(shape + (6,), value, np.float32)
        got = numvox.aggregate_votes(probs, offsets, threshold=0.5, splat=splat, backend=backend)
        assert not np.any(np.asarray(got)), value
    # only one axis huge: still dropped
    offsets = np.zeros(shape + (6,), np.float32)
    offsets[..., 2] = 1e30
    got = np.asarray(numvox.aggregate_votes(probs, offsets, splat=splat, backend=backend))
    assert not np.any(got[0]) and np.all(got[1] == 1)


def test_nearest_rounding_and_borders(backend):
    # one voxel volume along x, votes at -0.5 (kept: rounds to 0), 0.49 (kept), 0.5 (dropped)
    probs = np.ones((1, 1, 3, 2), np.float64)
    offsets = np.zeros((1, 1, 3, 3), np.float64)
    offsets[0, 0, :, 0] = [-0.5, 0.49, 0.5]
    got = np.asarray(numvox.aggregate_votes(probs, offsets, backend=backend))
    assert got.tolist() == [[[[1.0, 1.0, 0.0]]]]


def test_linear_subvoxel_weights(backend):
    probs = np.zeros((4, 4, 4, 2), np.float32)
    probs[0, 0, 0, 1] = 1.0
    offsets = np.zeros((4, 4, 4, 3), np.float32)
    offsets[0, 0, 0] = [1.25, 2.5, 0.0]
    got = np.asarray(numvox.aggregate_votes(probs, offsets, splat="linear", backend=backend))[0]
    want = np.zeros((4, 4, 4))
    want[1, 2, 0], want[1, 3, 0], want[2, 2, 0], want[2, 3, 0] = 0.375, 0.375, 0.125, 0.125
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert got.sum() == pytest.approx(1.0)


def test_thread_counts_and_deferred_votes():
    """The CPU split (each thread owns its source rows' heatmap rows, other votes are
    deferred) gives the same heatmaps for any thread count; votes cross the chunk
    boundaries everywhere."""
    import numba

    rng = np.random.default_rng(5)
    for batch in (None, 2, 3):
        for splat in ("nearest", "linear"):
            probs, offsets = make_inputs(rng, (19, 5, 7), 3, batch, spread=6.0)
            results = []
            before = numba.get_num_threads()
            try:
                for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS), numba.config.NUMBA_NUM_THREADS}):
                    numba.set_num_threads(threads)
                    results.append(check_votes(probs, offsets, "cpu", splat=splat, threshold=0.2))
            finally:
                numba.set_num_threads(before)
            for r in results[1:]:
                np.testing.assert_allclose(r, results[0], atol=1e-5)


def test_deferred_list_overflow_runs_more_rounds(monkeypatch):
    """Tiny deferred lists: the kernel stops early and the host runs further rounds."""
    import numba

    from numvox.votes import _cpu

    rng = np.random.default_rng(8)
    probs, offsets = make_inputs(rng, (16, 6, 5), 2, spread=10.0)
    offsets[: 8, ..., 0] += 8.0  # the first half votes into the second half's rows
    real = _cpu.work_split
    calls = []
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        for nchunks in (2, 3):  # 3: more chunks than threads, the owner filter of the lists

            def split(B, X, Y, threads, *profile, nchunks=nchunks):
                calls.append(1)
                return real(B, X, Y, nchunks, *profile)

            monkeypatch.setattr(_cpu, "work_split", split)
            for fraction in (2, 200):  # 200: lists of one line, many rounds
                monkeypatch.setattr(_cpu, "_DEFERRED_FRACTION", fraction)
                for splat in ("nearest", "linear"):
                    check_votes(probs, offsets, "cpu", splat=splat, threshold=0.3)
    finally:
        numba.set_num_threads(before)
    assert calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contiguous_and_strided_paths_agree(dtype):
    """The contiguous fast path (flat line scan) and the strided path give the same sums on
    the same data (same thread count, so the same order of additions)."""
    rng = np.random.default_rng(9)
    probs, offsets = make_inputs(rng, (11, 9, 70), 3, spread=5.0, dtype=dtype)
    probs[..., 1:][rng.random(probs[..., 1:].shape) < 0.05] = np.nan
    for splat in ("nearest", "linear"):
        for layout in ("axis-major", "landmark-major"):
            a = check_votes(probs, offsets, "cpu", splat=splat, layout=layout)
            b = check_votes(arrange(probs, "strided", rng), arrange(offsets, "F", rng), "cpu", splat=splat,
                            layout=layout)
            np.testing.assert_array_equal(a, b)


def test_float32_threshold_between_float32_values():
    """The contiguous float32 scan compares in float32 against the smallest float32 >= the
    threshold: values just below / at / above a threshold that float32 cannot hold."""
    from numvox.votes._cpu import scan_threshold

    thr = 0.1  # not a float32
    t = scan_threshold(thr, np.float32)
    assert float(t) >= thr and float(np.nextafter(t, np.float32(-1))) < thr
    assert scan_threshold(1e39, np.float32) == np.inf and scan_threshold(-1e39, np.float32) == -np.finfo(np.float32).max
    below = np.nextafter(t, np.float32(-1))
    probs = np.zeros((1, 1, 3, 2), np.float32)
    probs[0, 0, :, 1] = [below, t, np.float32(np.inf)]
    offsets = np.zeros((1, 1, 3, 3), np.float32)
    got = np.asarray(numvox.aggregate_votes(probs, offsets, threshold=thr, backend="cpu"))
    assert got[0, 0, 0].tolist() == [0.0, float(t), np.inf]
    for thr in (1e39, -1e39):
        want, _ = ref_votes(probs, offsets, thr)
        got = np.asarray(numvox.aggregate_votes(probs, offsets, threshold=thr, backend="cpu"))
        np.testing.assert_array_equal(got, want.astype(np.float32))



HALF_DTYPES = [np.float16] + ([BF16] if BF16 is not None else [])


def _spy_paths(monkeypatch):
    """Record, per aggregate_cpu launch, whether the contiguous (2-D) fast path ran."""
    import numvox.votes._cpu as cpu

    paths = []
    real = cpu.launch

    def spy(kernel, *args, **kw):
        if kernel is cpu.aggregate_cpu:
            paths.append("contiguous" if args[0].ndim == 2 else "strided")
        return real(kernel, *args, **kw)

    monkeypatch.setattr(cpu, "launch", spy)
    return paths


@pytest.mark.parametrize("pdt,odt", [(d, d) for d in HALF_DTYPES] + [(np.float16, np.float32), (np.float32, np.float16)]
                         + ([(BF16, np.float64), (np.float16, BF16)] if BF16 is not None else []))
def test_half_contiguous_and_strided_paths_agree(monkeypatch, pdt, odt):
    """C-contiguous float16 / bfloat16 inputs (also mixed with float32/float64) take the
    contiguous bit-scan path, with results bit-identical to the strided path on the same data."""
    rng = np.random.default_rng(19)
    probs, _ = make_inputs(rng, (11, 9, 70), 3, spread=5.0, dtype=pdt)
    _, offsets = make_inputs(rng, (11, 9, 70), 3, spread=5.0, specials=0.01, dtype=odt)
    probs[..., 1:][rng.random(probs[..., 1:].shape) < 0.05] = np.nan
    probs[..., 1:][rng.random(probs[..., 1:].shape) < 0.05] = -0.0
    probs[..., 1:][rng.random(probs[..., 1:].shape) < 0.02] = -np.inf
    paths = _spy_paths(monkeypatch)
    for thr in (0.5, 0.1, 1e-7):
        for splat in ("nearest", "linear"):
            for layout in ("axis-major", "landmark-major"):
                del paths[:]
                a = check_votes(probs, offsets, "cpu", threshold=thr, splat=splat, layout=layout)
                b = check_votes(arrange(probs, "strided", rng), arrange(offsets, "F", rng), "cpu", threshold=thr,
                                splat=splat, layout=layout)
                assert paths == ["contiguous", "strided"]
                np.testing.assert_array_equal(a, b)
    # batched input too
    del paths[:]
    pb, ob = np.stack([probs, probs[::-1]]), np.stack([offsets, offsets[::-1]])
    a = check_votes(pb, ob, "cpu", threshold=0.3)
    b = check_votes(arrange(pb, "strided", rng), ob[..., ::-1][..., ::-1], "cpu", threshold=0.3)
    assert paths[0] == "contiguous" and paths[1] == "strided"
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_bit_threshold_is_exact_for_every_bit_pattern(dtype):
    """``lo <= bits <= hi`` decides exactly as ``float64(value) >= thr`` for all 65536 half
    values and thresholds at, between, below and above representable values."""
    from numvox._shared.halfprec import half_code
    from numvox.votes._cpu import scan_threshold

    code = half_code(dtype)
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    with np.errstate(invalid="ignore"):
        vals = bits.view(dtype).astype(np.float64)
    finite_pos = np.unique(vals[np.isfinite(vals) & (vals > 0)])
    big = float(finite_pos[-1])
    thrs = [0.5, 0.1, 1 / 3, 1.0, 1e-3, 5.9604644775390625e-08, 1e-8, 3e-8, 1e-40, 5e-324, 1e-45,
            big, big * (1 + 2.0 ** -12), big * 2, 1e39, 1e300, 65504.0, 65519.0, 65520.0, 3.4e38]
    picks = finite_pos[np.linspace(0, finite_pos.size - 1, 40).astype(int)]
    thrs += [float(v) for v in picks] + [float(np.nextafter(v, 0)) for v in picks] + [
        float(np.nextafter(v, np.inf)) for v in picks]
    with np.errstate(invalid="ignore"):
        for thr in thrs:
            lo, hi = scan_threshold(thr, np.uint16, code)
            got = (bits >= lo) & (bits <= hi)
            np.testing.assert_array_equal(got, vals >= thr, err_msg=f"thr={thr!r}")


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_threshold_edge_values(monkeypatch, dtype):
    """Values exactly at the threshold vote, the next value below does not; NaN, -0.0,
    negative values and -inf never vote for thr > 0, +inf always does; subnormal thresholds
    and values; thr <= 0 falls back to the strided path (which decides signs itself)."""
    paths = _spy_paths(monkeypatch)
    one = np.array(1.0, dtype)
    tiny = np.array(0, np.uint16).view(dtype)  # placeholder
    sub1 = np.array(1, np.uint16).view(dtype)  # smallest subnormal
    sub2 = np.array(2, np.uint16).view(dtype)
    t = np.array(0.3, dtype)  # a representable threshold
    below = np.nextafter(t.astype(np.float64), 0)  # not representable: rounds to t or below
    below_h = (t.view(np.uint16) - np.uint16(1)).view(dtype)
    above_h = (t.view(np.uint16) + np.uint16(1)).view(dtype)
    vals = np.array([t, below_h, above_h, np.nan, -0.0, 0.0, np.inf, -np.inf, -t, sub1, sub2, one, tiny],
                    dtype)
    n = vals.size
    probs = np.zeros((1, 1, n, 2), dtype)
    probs[0, 0, :, 1] = vals
    offsets = np.zeros((1, 1, n, 3), dtype)
    for thr in (float(t), below, float(np.nextafter(float(t), 1)), float(sub1), float(sub2),
                float(sub1) * 1.5, float(sub1) / 2, 1e-30, 0.0, -0.0, -1e-30, -0.5, -np.finfo(np.float64).max,
                1e30, float(np.array(0x7BFF if dtype == np.float16 else 0x7F7F, np.uint16).view(dtype))):
        del paths[:]
        got = np.asarray(numvox.aggregate_votes(probs, offsets, threshold=thr, backend="cpu"))
        want, _ = ref_votes(probs, offsets, thr)
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=f"thr={thr!r}")
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want.astype(np.float32)))
        assert paths == (["contiguous"] if thr > 0 else ["strided"]), (thr, paths)
    got = np.asarray(numvox.aggregate_votes(probs, offsets, threshold=float(t), backend="cpu"))[0, 0, 0]
    assert got[0] == float(t) and got[1] == 0 and got[2] == float(above_h) and got[6] == np.inf
    assert not got[3:6].any() and not got[7:11].any()

def test_balanced_split_matches_reference(monkeypatch):
    """The chunks balanced by a sampled vote profile (used from ``_PROFILE_VOXELS`` on)
    give the reference sums, for clustered votes and for every thread count."""
    import numba

    from numvox.votes import _cpu

    monkeypatch.setattr(_cpu, "_PROFILE_VOXELS", 0)
    rng = np.random.default_rng(11)
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS), numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            for splat, dtype, order in (("nearest", np.float32, "C"), ("linear", np.float32, "C"),
                                        ("nearest", np.float16, "C"), ("nearest", np.float64, "F")):
                probs, offsets = make_inputs(rng, (23, 9, 6), 2, None, spread=4.0)
                probs[:5, ..., 1:] += 0.6  # most votes in the first rows
                probs, offsets = probs.astype(dtype, order=order), offsets.astype(dtype, order=order)
                check_votes(probs, offsets, "cpu", splat=splat, threshold=0.5)
    finally:
        numba.set_num_threads(before)


def test_work_split_balances_votes():
    from numvox.votes._cpu import work_split

    votes = np.zeros(100, np.int64)
    votes[10:20] = 10_000  # the vote-heavy rows: both chunks get half of them
    bounds = work_split(1, 100, 50, 2, votes, 1, 50, 4)
    assert bounds[0] == 0 and bounds[-1] == 100 and 13 <= bounds[1] <= 17
    votes[:] = 0
    votes[0] = 10**9  # one row holds everything: chunks still non-empty
    for threads in (2, 3, 7):
        bounds = work_split(1, 100, 50, threads, votes, 1, 50, 4)
        assert bounds[0] == 0 and bounds[-1] == 100 and np.all(np.diff(bounds) >= 1)


def test_work_split_memory_bound():
    from numvox.votes._cpu import work_split

    for B in range(1, 4):
        for X in (1, 2, 7, 300):
            for Y in (1, 5, 300):
                for threads in range(1, 20):
                    bounds = work_split(B, X, Y, threads)
                    n = len(bounds) - 1
                    assert 1 <= n <= threads and bounds[0] == 0 and bounds[-1] == B * X
                    assert np.all(np.diff(bounds) >= 1)
                    if n > 1:  # a line's votes (8 per landmark and voxel) fit a list
                        assert B * X * Y // (6 * n) >= 8


def test_out_buffer_reused_and_zeroed(backend):
    rng = np.random.default_rng(2)
    probs, offsets = make_inputs(rng, (4, 5, 6), 2)
    out = np.full((2, 4, 5, 6), 7.0, np.float32)
    got = numvox.aggregate_votes(probs, offsets, out=out, backend=backend)
    assert got is out
    want, mass = ref_votes(probs, offsets, 0.5)
    assert np.max(np.abs(out - want)) <= 1e-4 * mass


def test_empty_volumes(backend):
    for shape in [(0, 3, 3), (3, 0, 3), (2, 2, 0)]:
        probs = np.zeros(shape + (3,), np.float32)
        offsets = np.zeros(shape + (6,), np.float32)
        got = np.asarray(numvox.aggregate_votes(probs, offsets, backend=backend))
        assert got.shape == (2,) + shape
    got = np.asarray(numvox.aggregate_votes(np.zeros((0, 2, 2, 2, 2)), np.zeros((0, 2, 2, 2, 3)), backend=backend))
    assert got.shape == (0, 1, 2, 2, 2)


# ---------------------------------------------------------------- peaks -----------------
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.tuples(*[st.integers(1, SMALL)] * 3),
    lead=st.sampled_from([(1,), (3,), (2, 2)]),
    radius=st.integers(0, 3),
    dtype=st.sampled_from(DTYPES),
    zeros=st.booleans(),
    nans=st.booleans(),
    order=st.sampled_from(["C", "F"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_peaks_match_reference(backend, shape, lead, radius, dtype, zeros, nans, order, seed):
    rng = np.random.default_rng(seed)
    heat = (rng.random(lead + shape) * 10).round(0) - 2.0  # ties and negatives
    if zeros:
        heat.reshape((-1,) + shape)[0] = 0.0
    if nans:
        heat[rng.random(heat.shape) < 0.2] = np.nan
    heat = heat.astype(dtype)
    heat = np.asfortranarray(heat) if order == "F" else heat
    coords, values = numvox.heatmap_peaks(heat, radius=radius, backend=backend)
    want_c, want_v = ref_peaks(heat, radius)
    coords, values = np.asarray(coords), np.asarray(values)
    assert coords.shape == lead + (3,) and values.shape == lead
    assert coords.dtype == np.float64
    np.testing.assert_allclose(values, want_v, rtol=1e-6)
    np.testing.assert_allclose(coords, want_c, rtol=1e-9, atol=1e-9)


def test_huge_radius_is_the_whole_volume(backend):
    heat = np.random.default_rng(6).random((2, 4, 5, 6)).astype(np.float32)
    coords, values = numvox.heatmap_peaks(heat, radius=10**30, backend=backend)
    want_c, want_v = ref_peaks(heat, 10)
    np.testing.assert_allclose(np.asarray(coords), want_c, rtol=1e-9)


def test_all_zero_heatmap_gives_nan(backend):
    coords, values = numvox.heatmap_peaks(np.zeros((2, 3, 4, 5), np.float32), backend=backend)
    assert np.all(np.isnan(np.asarray(coords))) and np.all(np.asarray(values) == 0)
    coords, values = numvox.heatmap_peaks(np.zeros((2, 0, 4, 5), np.float32), backend=backend)
    assert np.asarray(coords).shape == (2, 3) and np.all(np.isnan(np.asarray(coords)))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the simulator's NumPy scalars
def test_peaks_of_float64_windows_whose_sums_overflow(backend):
    """float64 values near the dtype's maximum overflow the centroid's float64 sums: the
    window is summed again with scaled weights, giving the exact centroid (finite)."""
    big = np.finfo(np.float64).max
    heat = np.zeros((2, 5, 5, 5))
    heat[0, 1:4, 1:4, 1:4] = big / 2
    heat[0, 2, 2, 3] = big                     # the arg-max, at the window's z centre 3
    heat[1, 1:4, 1, 1] = 1e308                 # equal maxima at x = 1, 2, 3: the arg-max is x = 1
    heat[1, 0, 0, 0] = np.inf                  # ... unless an infinite value exists
    coords, values = (np.asarray(a) for a in numvox.heatmap_peaks(heat, radius=1, backend=backend))
    np.testing.assert_allclose(coords[0], [2, 2, (9 * 2 + 8 * 3 + 2 * 3) / 19], rtol=1e-12)
    np.testing.assert_array_equal(coords[1], [0, 0, 0])
    np.testing.assert_array_equal(values, [big, np.inf])
    heat[1, 0, 0, 0] = 0
    coords, _ = numvox.heatmap_peaks(heat, radius=1, backend=backend)
    np.testing.assert_allclose(np.asarray(coords)[1], [1.5, 1, 1], rtol=1e-12)  # sx = 3e308 overflowed


@pytest.mark.parametrize("layout", ["axis-major", "landmark-major"])
def test_end_to_end_recovers_landmarks(backend, layout):
    """Offsets point exactly at known sub-voxel landmarks, plus noise; linear splat and the
    centroid peak recover each landmark within 0.5 voxel."""
    rng = np.random.default_rng(11)
    shape = (14, 12, 13) if SIMULATED else (40, 36, 44)
    radius = 3 if SIMULATED else 7
    landmarks = np.array([[4.3, 5.7, 6.2], [9.6, 6.1, 4.8], [7.2, 3.4, 9.5]])
    if not SIMULATED:
        landmarks = landmarks * 3.0
    L = len(landmarks)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.float64)
    probs = np.zeros(shape + (L + 1,), np.float32)
    probs[..., 0] = 0.5
    offsets = np.zeros(shape + (3 * L,), np.float32)
    for l, lm in enumerate(landmarks):
        d = lm - grid
        inside = np.linalg.norm(d, axis=-1) <= radius
        probs[..., l + 1] = np.where(inside, rng.uniform(0.6, 1.0, shape), rng.uniform(0, 0.4, shape))
        noisy = d + rng.normal(0, 0.3, d.shape)
        for a in range(3):
            ch = a * L + l if layout == "axis-major" else 3 * l + a
            offsets[..., ch] = noisy[..., a]
    heat = check_votes(probs, offsets, backend, splat="linear", layout=layout)
    coords, values = numvox.heatmap_peaks(heat, radius=1, backend=backend)
    coords = np.asarray(coords)
    assert np.all(np.abs(coords - landmarks) < 0.5), coords - landmarks
    assert np.all(np.asarray(values) > 0)


# ---------------------------------------------------------------- errors ----------------
def test_bad_inputs():
    p = np.zeros((3, 3, 3, 3), np.float32)
    o = np.zeros((3, 3, 3, 6), np.float32)
    with pytest.raises(ValueError, match="agree"):
        numvox.aggregate_votes(p, np.zeros((3, 3, 4, 6), np.float32))
    with pytest.raises(ValueError, match="3\\*L = 6"):
        numvox.aggregate_votes(p, np.zeros((3, 3, 3, 5), np.float32))
    with pytest.raises(ValueError, match="L\\+1 >= 2"):
        numvox.aggregate_votes(p[..., :1], np.zeros((3, 3, 3, 0), np.float32))
    with pytest.raises(ValueError, match="both must be"):
        numvox.aggregate_votes(p[None], o)
    with pytest.raises(ValueError, match="probs has shape"):
        numvox.aggregate_votes(p[0], o[0])
    with pytest.raises(TypeError, match="probs has dtype"):
        numvox.aggregate_votes(p.astype(str), o)
    with pytest.raises(TypeError, match="offsets has dtype"):
        numvox.aggregate_votes(p, o.astype(np.complex64))
    with pytest.raises(TypeError, match="probs has dtype bool"):
        numvox.aggregate_votes(p.astype(bool), o)
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="threshold must be finite"):
            numvox.aggregate_votes(p, o, threshold=bad)
    with pytest.raises(TypeError, match="threshold"):
        numvox.aggregate_votes(p, o, threshold="0.5")
    with pytest.raises(ValueError, match="splat"):
        numvox.aggregate_votes(p, o, splat="cubic")
    with pytest.raises(ValueError, match="offset_layout"):
        numvox.aggregate_votes(p, o, offset_layout="xyz")
    with pytest.raises(ValueError, match="out has shape"):
        numvox.aggregate_votes(p, o, out=np.zeros((2, 3, 3, 4), np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        numvox.aggregate_votes(p, o, out=np.zeros((2, 3, 3, 3), np.float64))
    h = np.zeros((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        numvox.heatmap_peaks(h, radius=-1)
    with pytest.raises(TypeError, match="radius must be an integer"):
        numvox.heatmap_peaks(h, radius=1.5)
    with pytest.raises(ValueError, match="heatmaps has shape"):
        numvox.heatmap_peaks(h[0])
    with pytest.raises(TypeError, match="heatmaps has dtype"):
        numvox.heatmap_peaks(h.astype(object))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cpu_and_cuda_agree(cuda_backend, dtype):
    """The CPU and CUDA kernels give identical heatmaps and peaks, both splats and layouts,
    on dyadic probabilities and offsets (every float32 sum exact, so the order of the CUDA
    atomics cannot show)."""
    rng = np.random.default_rng(23)
    shape, L = ((3, 4, 5) if SIMULATED else (17, 18, 19)), 2
    probs = (rng.integers(0, 9, shape + (L + 1,)) / 8).astype(dtype)
    offsets = (rng.integers(-12, 13, shape + (3 * L,)) / 4).astype(dtype)
    for splat in ("nearest", "linear"):
        for layout in ("axis-major", "landmark-major"):
            kw = dict(threshold=0.5, splat=splat, offset_layout=layout)
            heat = np.asarray(numvox.aggregate_votes(probs, offsets, backend="cpu", **kw))
            np.testing.assert_array_equal(
                np.asarray(numvox.aggregate_votes(probs, offsets, backend=cuda_backend, **kw)), heat)
            cpu_c, cpu_v = numvox.heatmap_peaks(heat, radius=1, backend="cpu")
            cuda_c, cuda_v = numvox.heatmap_peaks(heat, radius=1, backend=cuda_backend)
            np.testing.assert_array_equal(np.asarray(cuda_v), cpu_v)
            np.testing.assert_allclose(np.asarray(cuda_c), cpu_c, rtol=1e-12, atol=0)


def test_ops_output_specs_match_results():
    """``OPS``: the output rules give the run-time shapes for known shapes and keep ``None``
    for unknown sizes and ranks."""
    from numvox.votes import OPS

    ops = {spec.name: spec for spec in OPS}
    assert ops["aggregate_votes"].arrays == ("probs", "offsets")
    assert ops["heatmap_peaks"].arrays == ("heatmaps",)
    votes, peaks = ops["aggregate_votes"].output_specs, ops["heatmap_peaks"].output_specs
    probs, offsets = np.zeros((2, 3, 4, 5, 3), np.float32), np.zeros((2, 3, 4, 5, 6), np.float32)
    heat = numvox.aggregate_votes(probs, offsets)
    dtypes = {"probs": probs.dtype, "offsets": offsets.dtype}
    assert votes({"probs": list(probs.shape), "offsets": list(offsets.shape)}, dtypes, {}) == [
        (list(heat.shape), heat.dtype.type)]
    coords, values = numvox.heatmap_peaks(heat)
    assert peaks({"heatmaps": list(heat.shape)}, {"heatmaps": heat.dtype}, {}) == [
        (list(coords.shape), np.float64), (list(values.shape), np.float64)]
    assert votes({"probs": [None, 4, None, 3], "offsets": None}, dtypes, {}) == [([2, None, 4, None], np.float32)]
    assert votes({"probs": [8, 8, 8, None], "offsets": None}, dtypes, {}) == [([None, 8, 8, 8], np.float32)]
    assert votes({"probs": None, "offsets": None}, dtypes, {}) == [(None, np.float32)]
    assert peaks({"heatmaps": [None, 2, 5, 5, 5]}, {}, {}) == [([None, 2, 3], np.float64), ([None, 2], np.float64)]
    assert peaks({"heatmaps": None}, {}, {}) == [(None, np.float64), (None, np.float64)]


def test_tensorflow_in_tensorflow_out():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    probs, offsets = make_inputs(rng, (5, 6, 7), 2, dtype=np.float16)
    got = numvox.aggregate_votes(tf.constant(probs), tf.constant(offsets), splat="linear")
    assert isinstance(got, tf.Tensor)
    want, mass = ref_votes(probs, offsets, 0.5, "linear")
    assert np.max(np.abs(got.numpy() - want)) <= 1e-4 * mass
    coords, values = numvox.heatmap_peaks(got)
    assert isinstance(coords, tf.Tensor) and tuple(coords.shape) == (2, 3)


# ---------------------------------------------------------------- CLI -------------------
def test_cli(tmp_path, capsys):
    rng = np.random.default_rng(4)
    probs, offsets = make_inputs(rng, (6, 5, 4), 2)
    np.save(tmp_path / "p.npy", probs)
    np.save(tmp_path / "o.npy", offsets)
    out, csv = tmp_path / "h.npy", tmp_path / "peaks.csv"
    rc = cli_main(["votes", str(tmp_path / "p.npy"), str(tmp_path / "o.npy"), "-o", str(out),
                   "--threshold", "0.4", "--splat", "linear", "--peaks", str(csv)])
    assert rc == 0
    heat = np.load(out)
    want, mass = ref_votes(probs, offsets, 0.4, "linear")
    assert np.max(np.abs(heat - want)) <= 1e-4 * mass
    rows = csv.read_text().splitlines()
    assert rows[0] == "batch,landmark,x,y,z,value" and len(rows) == 3
    want_c, want_v = ref_peaks(heat, 1)
    for l, row in enumerate(rows[1:]):
        b, l2, x, y, z, v = row.split(",")
        assert (int(b), int(l2)) == (0, l)
        np.testing.assert_allclose([float(x), float(y), float(z)], want_c[l])
    # user mistakes: one line, exit 2
    rc = cli_main(["votes", str(tmp_path / "p.npy"), str(tmp_path / "missing.npy"), "-o", str(out)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", offsets[..., :5])
    rc = cli_main(["votes", str(tmp_path / "p.npy"), str(tmp_path / "bad.npy"), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "channels" in err and err.count("\n") == 1
    rc = cli_main(["votes", str(tmp_path / "p.npy"), str(tmp_path / "o.npy"), "-o", str(out), "--threshold", "nan"])
    assert rc == 2 and "finite" in capsys.readouterr().err
