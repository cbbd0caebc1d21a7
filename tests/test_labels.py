"""Tests for numvox.descent_labels / descent_basins against independent float64 references."""

import numpy as np
import pytest
from conftest import SIMULATED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import ref_basins, ref_labels, ref_labels_exact, ref_scores
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import numvox
from numvox.labels._cpu import basins_from_labels_cpu, chunk_basins_cpu, labels_block_cpu

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BF16 = None

INT_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
FLOAT_DTYPES = [np.float16, np.float32, np.float64] + ([BF16] if BF16 is not None else [])
ALL_DTYPES = INT_DTYPES + FLOAT_DTYPES


# -- references -------------------------------------------------------------------------


def as_dtype(ints, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        ints = ints - ints.min() if ints.size else ints
    return ints.astype(dtype)


def max_dim():
    return 4 if SIMULATED else 9


shapes = st.tuples(*[st.integers(1, max_dim())] * 3)

# the ``backend`` fixture is a constant string: safe to share across generated examples
with_backend = settings(
    suppress_health_check=list(settings.default.suppress_health_check) + [HealthCheck.function_scoped_fixture]
)


# -- labels: exactness ------------------------------------------------------------------


@with_backend
@given(shape=shapes, levels=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from(ALL_DTYPES), border=st.sampled_from(["inside", "zero"]))
def test_integer_volumes_exact(backend, shape, levels, seed, dtype, border):
    """Integer-valued volumes (many ties and plateaus): exact equality, every dtype."""
    rng = np.random.default_rng(seed)
    v = as_dtype(rng.integers(-levels, levels + 1, shape), dtype)
    got = numvox.descent_labels(v, border=border, backend=backend)
    assert got.dtype == np.uint8 and got.shape == v.shape
    np.testing.assert_array_equal(got, ref_labels(v, border))


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.int64])
def test_wide_integer_range_exact(dtype):
    """Full int16 range and int32/int64 ranges up to 2**24: still exact (float64 scores)."""
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    lo, hi = (int(info.min), int(info.max)) if np.dtype(dtype).itemsize == 2 else (-2**23, 2**23)
    v = rng.integers(lo, hi, (7, 8, 9), endpoint=True).astype(dtype)
    # sprinkle exact ties and Pell-like near-ties (70 vs 99/sqrt(2))
    v[3, 3, 3], v[3, 3, 4], v[2, 2, 2] = 1000, 930, 1000 - 99
    v[3, 4, 3] = 1000 - 70
    np.testing.assert_array_equal(numvox.descent_labels(v), ref_labels(v))


@with_backend
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(FLOAT_DTYPES))
def test_float_volumes_within_rounding(backend, shape, seed, dtype):
    """Random floats: equal to the float64 reference except where the top two scores are
    within rounding (the chosen neighbour's reference score is then within rounding of the
    best one)."""
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal(shape) * 10).astype(dtype)
    got = numvox.descent_labels(v, backend=backend)
    want = ref_labels(v)
    diff = got != want
    if diff.any():
        S = ref_scores(v)
        best = S.max(axis=0)[diff]
        chosen = np.take_along_axis(S, got[None].astype(np.int64), 0)[0][diff]
        chosen = np.where(got[diff] == 13, 0.0, chosen)  # 13 vs. a score at ~0
        scale = np.abs(v.astype(np.float64)).max() + 1
        assert np.all(np.abs(best - chosen) <= 1e-6 * scale), (best, chosen)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_cpu_and_cuda_agree(cuda_backend, dtype):
    """The CPU and CUDA kernels give identical labels (both borders) and basins on
    integer-valued volumes (exact in every dtype), ties and plateaus included."""
    shape = (4, 5, 6) if SIMULATED else (17, 18, 19)
    v = as_dtype(np.random.default_rng(21).integers(-2, 3, shape), dtype)
    for border in ("inside", "zero"):
        np.testing.assert_array_equal(numvox.descent_labels(v, border=border, backend=cuda_backend),
                                      numvox.descent_labels(v, border=border, backend="cpu"))
    np.testing.assert_array_equal(numvox.descent_basins(v, backend=cuda_backend),
                                  numvox.descent_basins(v, backend="cpu"))


def test_float_ties_exact():
    """Floats with exact ties and plateaus behave like integers."""
    rng = np.random.default_rng(3)
    v = rng.integers(0, 3, (10, 11, 12)).astype(np.float32) * 0.5
    np.testing.assert_array_equal(numvox.descent_labels(v), ref_labels(v))


def test_seed_semantics_by_hand():
    v = np.full((3, 3, 3), 5.0)
    v[1, 1, 1] = 1.0
    lab = numvox.descent_labels(v)
    assert lab[1, 1, 1] == 13  # strict local minimum
    assert lab[0, 0, 0] == 26  # corner voxel: steepest towards the centre (distance sqrt(3))
    v = np.zeros((3, 3, 3))
    assert (numvox.descent_labels(v)[1, 1, 1]) == 0  # plateau: smallest code with score 0
    assert numvox.descent_labels(np.zeros((1, 1, 1)))[0, 0, 0] == 13  # no candidates
    # one-voxel-thick: neighbours only along axis 2
    lab = numvox.descent_labels(np.array([[[3.0, 1.0, 2.0]]]))
    assert lab.tolist() == [[[14, 13, 12]]]
    # distance scaling: a drop of 1 at distance 1 beats a drop of 1.2 at distance sqrt(2)
    v = np.full((3, 3, 3), 10.0)
    v[1, 1, 2], v[0, 0, 1] = 9.0, 8.8
    assert numvox.descent_labels(v)[1, 1, 1] == 14


def test_matches_seed_create_label2_in_interior(repo_benchmarks):
    """Interior labels equal the seed's create_label2 except at strict local minima."""
    from benchmarks import baselines_labels as baselines  # part of the repo: never skipped
    rng = np.random.default_rng(5)
    for v in (rng.random((12, 13, 14)).astype(np.float32),
              rng.integers(0, 4, (12, 13, 14)).astype(np.int16)):
        seed = baselines.create_label2(v)
        ours = numvox.descent_labels(v, border="zero")
        diff = seed != ours
        assert np.all(ours[diff] == 13)
        assert np.all(ref_scores(v).max(axis=0)[diff] < 0)  # exactly the strict minima
        inside = numvox.descent_labels(v)[1:-1, 1:-1, 1:-1]
        np.testing.assert_array_equal(inside, ours[1:-1, 1:-1, 1:-1])


# -- labels: layouts, outputs, libraries ---------------------------------------------------


def test_layouts_and_readonly(backend):
    rng = np.random.default_rng(7)
    base = rng.integers(0, 5, (9, 10, 11)).astype(np.float32)
    want = ref_labels(base)
    for v in (np.asfortranarray(base), base[::-1, :, ::-1][::-1, :, ::-1], base.copy()):
        v.flags.writeable = False
        np.testing.assert_array_equal(numvox.descent_labels(v, backend=backend), want)
    strided = np.zeros((18, 10, 22), np.float32)
    strided[::2, :, ::2] = base
    np.testing.assert_array_equal(numvox.descent_labels(strided[::2, :, ::2], backend=backend), want)


def test_out_parameter():
    v = np.random.default_rng(8).random((5, 6, 7))
    out = np.full(v.shape, 99, np.uint8)
    res = numvox.descent_labels(v, out=out)
    assert res is out
    np.testing.assert_array_equal(out, ref_labels(v))
    with pytest.raises(ValueError, match="out has shape"):
        numvox.descent_labels(v, out=np.empty((5, 6, 6), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        numvox.descent_labels(v, out=np.empty(v.shape, np.int32))


def test_large_row_multiple_tiles():
    """Rows longer than a tile and planes with partial tiles."""
    v = np.random.default_rng(9).integers(0, 6, (3, 19, 600)).astype(np.int16)
    np.testing.assert_array_equal(numvox.descent_labels(v), ref_labels(v))
    np.testing.assert_array_equal(numvox.descent_labels(v, border="zero"), ref_labels(v, "zero"))


def test_tensorflow_in_tensorflow_out():
    tf = pytest.importorskip("tensorflow")
    v = np.random.default_rng(10).integers(0, 4, (4, 5, 6)).astype(np.float32)
    res = numvox.descent_labels(tf.constant(v))
    assert isinstance(res, tf.Tensor) and res.dtype == tf.uint8
    np.testing.assert_array_equal(res.numpy(), ref_labels(v))
    b = numvox.descent_basins(tf.constant(v))
    np.testing.assert_array_equal(b.numpy(), ref_basins(v))
    bf = tf.cast(tf.constant(v), tf.bfloat16)
    np.testing.assert_array_equal(numvox.descent_labels(bf).numpy(), ref_labels(v))


# -- labels: bad input ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64] + ([BF16] if BF16 is not None else []))
def test_nan_and_inf_raise_with_count(backend, dtype):
    v = np.ones((4, 5, 6), dtype)
    v[1, 2, 3] = np.nan
    v[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="2 NaN values"):
        numvox.descent_labels(v, backend=backend)
    with pytest.raises(ValueError, match="2 NaN values"):
        numvox.descent_basins(v, backend=backend)
    v = np.ones((4, 5, 6), dtype)
    v[3, 4, 5] = np.inf
    with pytest.raises(ValueError, match="1 infinite value"):
        numvox.descent_labels(v, backend=backend)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"2-D.*volume\[None\]"):
        numvox.descent_labels(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="4-D"):
        numvox.descent_labels(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="2-D"):
        numvox.descent_basins(np.zeros((4, 5)))
    with pytest.raises(TypeError, match="dtype bool"):
        numvox.descent_labels(np.zeros((2, 3, 4), bool))
    with pytest.raises(TypeError, match="complex"):
        numvox.descent_labels(np.zeros((2, 3, 4), complex))
    with pytest.raises(ValueError, match="border"):
        numvox.descent_labels(np.zeros((2, 3, 4)), border="wrap")


def test_two_d_via_none_is_3x3_analogue():
    img = np.random.default_rng(11).integers(0, 4, (6, 7)).astype(np.float32)
    lab = numvox.descent_labels(img[None])[0]
    assert set(np.unique(lab)) <= set(range(9, 18))
    np.testing.assert_array_equal(lab, ref_labels(img[None])[0])


@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0, 4), (3, 4, 0)])
def test_empty(backend, shape):
    lab = numvox.descent_labels(np.zeros(shape, np.float32), backend=backend)
    assert lab.shape == shape and lab.dtype == np.uint8
    bas = numvox.descent_basins(np.zeros(shape, np.float32), backend=backend)
    assert bas.shape == shape and bas.dtype == np.int32


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integers_exact_far_from_zero(backend, dtype):
    """A small value range anywhere in the 64-bit range is exact: ``v + offset`` has the labels
    of ``v`` (several tiles; the dtype's extreme values included)."""
    v = np.random.default_rng(5).integers(0, 6, (3, 19, 300))
    want = ref_labels(v.astype(np.int16))
    info = np.iinfo(dtype)
    for offset in (int(info.min), int(info.max) - 5, 2**62 + 12345):
        w = (v.astype(dtype) + np.array(offset, dtype)).astype(dtype)
        np.testing.assert_array_equal(numvox.descent_labels(w, backend=backend), want)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integers_spanning_the_whole_range(backend, dtype):
    """Values 2**52 and more apart (the CPU redoes such tiles voxel by voxel, exactly): the exact
    reference, in a volume of two tiles of which only the second spans that far."""
    rng = np.random.default_rng(6)
    info = np.iinfo(dtype)
    v = rng.integers(0, 4, (2, 18, 12)).astype(dtype)
    pool = np.array([info.min, info.min + 1, 0, 1, 2**62, info.max - 1, info.max], dtype)
    v[:, 17] = rng.choice(pool, (2, 12))
    np.testing.assert_array_equal(numvox.descent_labels(v, backend=backend), ref_labels_exact(v))
    w = rng.choice(pool, (3, 4, 5))
    np.testing.assert_array_equal(numvox.descent_labels(w, backend=backend), ref_labels_exact(w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_floats_near_the_dtype_maximum_in_one_tile(backend, dtype):
    """Differences that overflow to inf make no false ties; the other tile is untouched."""
    rng = np.random.default_rng(7)
    v = rng.integers(-3, 4, (2, 18, 12)).astype(dtype)
    v[:, 17] = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], (2, 12)) * np.finfo(dtype).max
    np.testing.assert_array_equal(numvox.descent_labels(v, backend=backend), ref_labels_exact(v))


def test_huge_float64_values_do_not_crash():
    """Differences overflow to inf here: the float64 ``ref_labels`` then has false ties
    between distance classes, so the exact reference is the oracle."""
    v = np.random.default_rng(12).choice([-1.7e308, 0.0, 1.7e308], (5, 5, 5))
    np.testing.assert_array_equal(numvox.descent_labels(v), ref_labels_exact(v))


# -- chunk entry point ------------------------------------------------------------------


@given(shape=st.tuples(*[st.integers(2, 9)] * 3), cut=st.tuples(*[st.floats(0.1, 0.9)] * 3),
       seed=st.integers(0, 2**32 - 1), border=st.sampled_from(["inside", "zero"]))
def test_block_entry_point_reproduces_full_volume(shape, cut, seed, border):
    """Labels computed per block (one-voxel halo, true-face flags) tile the full result."""
    v = np.random.default_rng(seed).integers(0, 4, shape).astype(np.int16)
    full = ref_labels(v, border)
    cuts = [max(1, min(s - 1, int(round(c * s)))) for s, c in zip(shape, cut)]
    got = np.zeros(shape, np.uint8)
    for ranges in np.ndindex(2, 2, 2):
        lo = [0 if r == 0 else c for r, c in zip(ranges, cuts)]
        hi = [c if r == 0 else s for r, c, s in zip(ranges, cuts, shape)]
        faces = tuple((l_ == 0, h == s) for l_, h, s in zip(lo, hi, shape))
        src = tuple(slice(max(0, l_ - 1), min(s, h + 1)) for l_, h, s in zip(lo, hi, shape))
        got[tuple(slice(l_, h) for l_, h in zip(lo, hi))] = labels_block_cpu(v[src], faces, border)
    np.testing.assert_array_equal(got, full)


# -- basins -----------------------------------------------------------------------------


@with_backend
@given(shape=shapes, levels=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.float64]))
def test_basins_exact_on_integer_volumes(backend, shape, levels, seed, dtype):
    v = as_dtype(np.random.default_rng(seed).integers(-levels, levels + 1, shape), dtype)
    got = numvox.descent_basins(v, backend=backend)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref_basins(v))


def test_basins_plateau_and_ramp():
    v = np.zeros((4, 5, 6), np.int16)  # one flat minimum: one basin
    np.testing.assert_array_equal(numvox.descent_basins(v), 1)
    v = np.array([[[0, 1, 2, 1, 0]]], np.int16)
    assert numvox.descent_basins(v).tolist() == [[[1, 1, 1, 2, 2]]]
    # two flat minima separated by a ridge; numbered by first voxel in C order
    v = np.full((3, 3, 9), 5.0)
    v[:, :, :3] = 1
    v[:, :, 6:] = 0
    b = numvox.descent_basins(v)
    assert b[0, 0, 0] == 1 and b[0, 0, 8] == 2 and set(np.unique(b)) == {1, 2}


def test_basins_larger_volume_slabs():
    """Enough planes for several slabs, with long descent paths crossing slab boundaries."""
    rng = np.random.default_rng(13)
    a, b, c = np.meshgrid(np.arange(40), np.arange(12), np.arange(13), indexing="ij")
    v = ((a - 20) ** 2 + (b - 3) ** 2 + rng.integers(0, 3, a.shape) * 7).astype(np.int32)
    np.testing.assert_array_equal(numvox.descent_basins(v), ref_basins(v))
    v = rng.integers(0, 3, (31, 9, 10)).astype(np.uint8)
    np.testing.assert_array_equal(numvox.descent_basins(v), ref_basins(v))


def test_basins_from_labels_piece():
    v = np.random.default_rng(14).integers(0, 3, (8, 9, 10)).astype(np.int16)
    basins, m = basins_from_labels_cpu(numvox.descent_labels(v))
    want = ref_basins(v)
    np.testing.assert_array_equal(basins, want)
    assert m == want.max()


# -- CLI --------------------------------------------------------------------------------


def test_cli(tmp_path, capsys):
    from numvox.cli import main

    v = np.random.default_rng(15).integers(0, 4, (5, 6, 7)).astype(np.int16)
    np.save(tmp_path / "v.npy", v)
    rc = main(["labels", str(tmp_path / "v.npy"), "-o", str(tmp_path / "l.npy"),
               "--basins", str(tmp_path / "b.npy")])
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), ref_labels(v))
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), ref_basins(v))
    rc = main(["labels", str(tmp_path / "v.npy"), "-o", str(tmp_path / "z.npy"), "--border", "zero"])
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), ref_labels(v, "zero"))
    capsys.readouterr()


def test_cli_errors(tmp_path, capsys):
    from numvox.cli import main

    assert main(["labels", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "o.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "flat.npy", np.zeros((3, 4)))
    assert main(["labels", str(tmp_path / "flat.npy"), "-o", str(tmp_path / "o.npy")]) == 2
    assert "2-D" in capsys.readouterr().err
    bad = np.ones((3, 4, 5))
    bad[1, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert main(["labels", str(tmp_path / "nan.npy"), "-o", str(tmp_path / "o.npy")]) == 2
    assert "1 NaN value" in capsys.readouterr().err


@given(shape=st.tuples(*[st.integers(2, 8)] * 3), cut=st.tuples(*[st.floats(0.1, 0.9)] * 3),
       seed=st.integers(0, 2**32 - 1))
def test_block_basins_merge_to_global(shape, cut, seed):
    """Chunk-local components + leaving edges, merged with SciPy, reproduce descent_basins."""
    v = np.random.default_rng(seed).integers(0, 3, shape).astype(np.int16)
    labels = ref_labels(v)
    cuts = [max(1, min(s - 1, int(round(c * s)))) for s, c in zip(shape, cut)]
    node_of_voxel = np.zeros(v.size, np.int64)  # global node id of each voxel's local component
    edges, base = [], 0
    for ranges in np.ndindex(2, 2, 2):
        lo = [0 if r == 0 else c for r, c in zip(ranges, cuts)]
        hi = [c if r == 0 else s for r, c, s in zip(ranges, cuts, shape)]
        chunk = labels[tuple(slice(a, b) for a, b in zip(lo, hi))].copy()
        local, _, flat, dst = chunk_basins_cpu(chunk, lo, shape)
        src = local.reshape(-1)[flat]
        idx = np.ravel_multi_index(np.indices(local.shape).reshape(3, -1) + np.array(lo)[:, None], shape)
        node_of_voxel[idx] = base + local.ravel() - 1
        edges.append((base + src - 1, dst))
        base += int(local.max())
    a = np.concatenate([e[0] for e in edges])
    b = node_of_voxel[np.concatenate([e[1] for e in edges])]
    graph = coo_matrix((np.ones(a.size), (a, b)), shape=(base, base))
    _, comp = connected_components(graph, directed=True, connection="weak")
    merged = comp[node_of_voxel]
    _, first = np.unique(merged, return_index=True)
    rank = np.empty(merged.max() + 1, np.int64)
    rank[np.unique(merged)[np.argsort(first)]] = np.arange(1, first.size + 1)
    np.testing.assert_array_equal(rank[merged].reshape(shape), ref_basins(v))
