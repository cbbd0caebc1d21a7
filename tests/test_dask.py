"""numvox.dask on a distributed LocalCluster: equality with the in-memory calls whatever the
chunking (one-voxel and uneven chunks included), Zarr round trips, the CLI's --dask path."""

import argparse

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from reference import ref_basins  # noqa: E402

import numvox  # noqa: E402
import numvox.dask as nd  # noqa: E402


@pytest.fixture(scope="module")
def one_numba_thread():
    """Tiny blocks: a single Numba thread avoids the parallel launch cost per block."""
    import numba

    n = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(n)


def _warm_up():
    """Compile (or load) the kernels here first, so that the workers load them from Numba's
    on-disk cache instead of compiling them concurrently."""
    v = np.random.default_rng(0).integers(0, 3, (4, 4, 4))
    for dtype in ("uint8", "int16", "float16", "float32", "float64", "int32"):
        x = da.from_array(v.astype(dtype), chunks=2)
        nd.descent_basins(x).compute(scheduler="sync")
    for dtype in ("float32", "float16"):
        P = da.from_array(np.ones((2, 4, 4, 4, 2), dtype), chunks=(1, 2, 4, 4, 2))
        O = da.zeros((2, 4, 4, 4, 3), dtype=dtype, chunks=(1, 2, 4, 4, 3))
        for splat in ("nearest", "linear"):
            nd.aggregate_votes(P, O, splat=splat).compute(scheduler="sync")
            nd.aggregate_votes(P, O, splat=splat, max_offset=1).compute(scheduler="sync")


@pytest.fixture(scope="module")
def client():
    """One cluster of 2 worker processes for the module (Numba kernels load from the cache)."""
    _warm_up()
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        env={"NUMBA_NUM_THREADS": "1"}, silence_logs=40,
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def chunk_strategy(n):
    """Chunks of one axis of length n: uniform (1 included) or an uneven split."""
    return st.one_of(
        st.integers(1, max(1, n)),
        st.lists(st.integers(1, 3), min_size=1, max_size=n).map(lambda c: _fit(c, n)),
    )


def _fit(parts, n):
    out, total = [], 0
    for p in parts:
        if total + p > n:
            break
        out.append(p)
        total += p
    if total < n:
        out.append(n - total)
    return tuple(out) if out else (n,)


CHUNKINGS = [
    (3, 2, 4),
    (1, 6, 5),  # one-voxel chunks along axis 0
    (7, 2, 1),  # two-voxel chunks along axis 1, one-voxel along axis 2
    ((1, 2, 4), (2, 1, 3), (5,)),  # uneven
    ((6, 1), (1, 5), (1, 1, 1, 2)),
    (7, 6, 5),  # one chunk
]


# -- descent_labels ------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("border", ["inside", "zero"])
def test_labels_equal_in_memory(client, chunks, border):
    rng = np.random.default_rng(0)
    v = rng.integers(0, 4, (7, 6, 5)).astype(np.int16)  # many ties and plateaus
    x = da.from_array(v, chunks=chunks)
    res = nd.descent_labels(x, border=border)
    assert isinstance(res, da.Array) and res.dtype == np.uint8 and res.chunks == x.chunks
    np.testing.assert_array_equal(res.compute(), numvox.descent_labels(v, border=border))


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float16", "float32", "float64"])
def test_labels_dtypes(client, dtype):
    rng = np.random.default_rng(1)
    v = (rng.integers(0, 6, (6, 5, 7)) if dtype[0] in "ui" else rng.normal(size=(6, 5, 7))).astype(dtype)
    x = da.from_array(v, chunks=((2, 4), (1, 4), (3, 3, 1)))
    np.testing.assert_array_equal(nd.descent_labels(x).compute(), numvox.descent_labels(v))


@settings(max_examples=15)
@given(data=st.data())
def test_labels_random_shapes_and_chunks(one_numba_thread, data):
    """Many shapes and chunkings, on the synchronous scheduler (the cluster tests above
    cover ``distributed``)."""
    shape = tuple(data.draw(st.integers(1, 5)) for _ in range(3))
    chunks = tuple(data.draw(chunk_strategy(n)) for n in shape)
    seed = data.draw(st.integers(0, 2**16))
    v = np.random.default_rng(seed).integers(0, 3, shape).astype(np.uint8)
    x = da.from_array(v, chunks=chunks)
    for border in ("inside", "zero"):
        np.testing.assert_array_equal(nd.descent_labels(x, border=border).compute(scheduler="sync"),
                                      numvox.descent_labels(v, border=border))


def test_labels_errors(client):
    with pytest.raises(TypeError, match="dask"):
        nd.descent_labels(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="2-D"):
        nd.descent_labels(da.zeros((3, 3)))
    with pytest.raises(ValueError, match="border"):
        nd.descent_labels(da.zeros((3, 3, 3)), border="nope")
    with pytest.raises(TypeError, match="dtype"):
        nd.descent_labels(da.zeros((3, 3, 3), dtype=complex))
    v = np.zeros((6, 6, 6), np.float32)
    v[4, 1, 2] = np.nan
    res = nd.descent_labels(da.from_array(v, chunks=3))  # lazy: raised when computed
    with pytest.raises(ValueError, match="NaN"):
        res.compute()
    with pytest.raises(ValueError, match="NaN"):
        nd.descent_basins(da.from_array(v, chunks=3)).compute()


def test_empty_volumes(client):
    x = da.zeros((0, 4, 3), dtype=np.float32, chunks=2)
    assert nd.descent_labels(x).compute().shape == (0, 4, 3)
    assert nd.descent_basins(x).compute().shape == (0, 4, 3)


def test_out_numpy_and_zero_size_chunks(client):
    v = np.random.default_rng(2).integers(0, 3, (5, 4, 6)).astype(np.int32)
    x = da.from_array(v, chunks=2)[:, :, np.array([0, 1, 2, 3, 4, 5])]  # fancy index: may add chunks
    x = da.concatenate([x[:0], x], axis=0)  # a zero-length chunk along axis 0
    out = np.zeros(v.shape, np.uint8)
    assert nd.descent_labels(x, out=out) is out
    np.testing.assert_array_equal(out, numvox.descent_labels(v))
    np.testing.assert_array_equal(nd.descent_basins(x).compute(), numvox.descent_basins(v))


# -- descent_basins ------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_basins_equal_in_memory(client, chunks):
    rng = np.random.default_rng(3)
    v = rng.integers(0, 3, (7, 6, 5)).astype(np.int16)
    res = nd.descent_basins(da.from_array(v, chunks=chunks))
    assert isinstance(res, da.Array) and res.dtype == np.int32
    got = res.compute()
    np.testing.assert_array_equal(got, ref_basins(v, labels=numvox.descent_labels(v)))
    np.testing.assert_array_equal(got, numvox.descent_basins(v))


def test_basins_smooth_volume_crossing_chunks(client):
    """Few, large basins that span many chunks (long cross-chunk chains)."""
    g = np.indices((12, 11, 10)).astype(np.float64)
    v = np.sin(g[0] / 3.0) * np.cos(g[1] / 2.5) + 0.3 * np.sin(g[2] / 2.0)
    x = da.from_array(v.astype(np.float32), chunks=((1, 4, 2, 5), 3, (2, 2, 6)))
    np.testing.assert_array_equal(nd.descent_basins(x).compute(), numvox.descent_basins(v.astype(np.float32)))


def test_basins_flat_volume_is_one_basin(client):
    x = da.ones((5, 4, 3), dtype=np.uint8, chunks=(1, 2, 3))
    np.testing.assert_array_equal(nd.descent_basins(x).compute(), np.ones((5, 4, 3), np.int32))


@settings(max_examples=15)
@given(data=st.data())
def test_basins_random_shapes_and_chunks(one_numba_thread, data):
    """As test_labels_random_shapes_and_chunks, against the SciPy reference."""
    shape = tuple(data.draw(st.integers(1, 5)) for _ in range(3))
    chunks = tuple(data.draw(chunk_strategy(n)) for n in shape)
    seed = data.draw(st.integers(0, 2**16))
    v = np.random.default_rng(seed).integers(0, 3, shape).astype(np.uint8)
    got = nd.descent_basins(da.from_array(v, chunks=chunks)).compute(scheduler="sync")
    np.testing.assert_array_equal(got, ref_basins(v, labels=numvox.descent_labels(v)))


def test_zarr_round_trip(client, tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(4)
    v = rng.integers(0, 5, (10, 9, 8)).astype(np.float32)
    da.from_array(v, chunks=(4, 3, 5)).to_zarr(str(tmp_path / "v.zarr"))
    x = da.from_zarr(str(tmp_path / "v.zarr"))
    nd.descent_labels(x, border="zero").to_zarr(str(tmp_path / "l.zarr"))
    nd.descent_basins(x).to_zarr(str(tmp_path / "b.zarr"))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "l.zarr"))[...],
                                  numvox.descent_labels(v, border="zero"))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "b.zarr"))[...], numvox.descent_basins(v))
    # out= a Zarr array, written by the workers
    z = zarr.open_array(str(tmp_path / "o.zarr"), mode="w", shape=v.shape, chunks=(4, 3, 5), dtype=np.uint8)
    assert nd.descent_labels(x, out=z) is z
    np.testing.assert_array_equal(z[...], numvox.descent_labels(v))


# -- aggregate_votes -----------------------------------------------------------------------
def _votes_inputs(rng, shape, L, dyadic):
    if dyadic:  # probabilities with few bits: every float32 partial sum is exact
        probs = (rng.integers(0, 5, shape + (L + 1,)) / 4).astype(np.float32)
    else:
        probs = rng.random(shape + (L + 1,), dtype=np.float32)
    offs = rng.normal(0, 2.5, shape + (3 * L,)).astype(np.float32)
    return probs, offs


VOTE_CHUNKS = [(3, 2, 4), (1, 6, 5), ((1, 2, 4), 6, (2, 3))]


@pytest.mark.parametrize("chunks", VOTE_CHUNKS)
@pytest.mark.parametrize("layout", ["axis-major", "landmark-major"])
@pytest.mark.parametrize("batched", [False, True])
def test_votes_nearest_exact(client, chunks, layout, batched):
    rng = np.random.default_rng(5)
    shape = ((2,) if batched else ()) + (7, 6, 5)
    probs, offs = _votes_inputs(rng, shape, 2, dyadic=True)
    flat = offs.reshape(-1, offs.shape[-1])  # a view: NaN / inf / huge offsets of 3 voxels
    flat[0, 0], flat[7, 1], flat[11, 2] = np.nan, np.inf, 1e30
    ref = numvox.aggregate_votes(probs, offs, offset_layout=layout)
    ch = ((1,) if batched else ()) + (chunks if isinstance(chunks, tuple) else (chunks,) * 3)
    P = da.from_array(probs, chunks=ch + (-1,))
    O = da.from_array(offs, chunks=ch + (2,))  # channel axis rechunked inside
    res = nd.aggregate_votes(P, O, offset_layout=layout)
    assert isinstance(res, da.Array) and res.dtype == np.float32 and res.shape == ref.shape
    np.testing.assert_array_equal(res.compute(), ref)
    mo = float(np.abs(offs[np.isfinite(offs) & (np.abs(offs) < 1e20)]).max())
    # the halo plan cannot exclude the 1e30 / inf votes: they land outside the volume anyway
    np.testing.assert_array_equal(nd.aggregate_votes(P, O, offset_layout=layout, max_offset=mo).compute(), ref)


@pytest.mark.parametrize("chunks", VOTE_CHUNKS)
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_votes_linear_within_rounding(client, chunks, threshold):
    rng = np.random.default_rng(6)
    probs, offs = _votes_inputs(rng, (7, 6, 5), 3, dyadic=False)
    ref = numvox.aggregate_votes(probs, offs, splat="linear", threshold=threshold)
    P = da.from_array(probs, chunks=chunks if isinstance(chunks, int) else chunks + (-1,))
    O = da.from_array(offs, chunks=chunks if isinstance(chunks, int) else chunks + (-1,))
    mass = float(probs[..., 1:][probs[..., 1:] >= threshold].sum()) + 1.0
    for kw in ({}, {"max_offset": float(np.abs(offs).max())}):
        got = nd.aggregate_votes(P, O, splat="linear", threshold=threshold, **kw).compute()
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * mass)


def test_votes_float16_and_max_offset_violation(client):
    rng = np.random.default_rng(7)
    probs, offs = _votes_inputs(rng, (8, 6, 6), 1, dyadic=True)
    probs16, offs16 = probs.astype(np.float16), offs.astype(np.float16)
    ref = numvox.aggregate_votes(probs16, offs16)
    P = da.from_array(probs16, chunks=(3, 4, 6, 2))
    O = da.from_array(offs16, chunks=(3, 4, 6, 3))
    np.testing.assert_array_equal(nd.aggregate_votes(P, O).compute(), ref)
    with pytest.raises(ValueError, match="max_offset"):
        nd.aggregate_votes(P, O, max_offset=1.0).compute()


def test_votes_errors():
    P = da.zeros((4, 4, 4, 3), chunks=2)
    with pytest.raises(ValueError, match="channels"):
        nd.aggregate_votes(P, da.zeros((4, 4, 4, 5)))
    with pytest.raises(ValueError, match="agree"):
        nd.aggregate_votes(P, da.zeros((4, 4, 5, 6)))
    with pytest.raises(ValueError, match="finite"):
        nd.aggregate_votes(P, da.zeros((4, 4, 4, 6)), threshold=float("nan"))
    with pytest.raises(ValueError, match="splat"):
        nd.aggregate_votes(P, da.zeros((4, 4, 4, 6)), splat="cubic")
    with pytest.raises(ValueError, match="max_offset"):
        nd.aggregate_votes(P, da.zeros((4, 4, 4, 6)), max_offset=-1)


# -- correlate_batch -----------------------------------------------------------------------
CORR_CASES = [
    {},
    {"mode": "valid", "channel_axis": -1},
    {"mode": "full", "reduce": "max"},
    {"reduce": "argmax"},
    {"normalize": True, "mode": "valid"},
    {"method": "fft", "reduce": "max", "channel_axis": -1},
]


@pytest.mark.parametrize("kw", CORR_CASES)
def test_correlate_equal_in_memory(client, kw):
    rng = np.random.default_rng(8)
    im = rng.random((7, 12, 10, 2), dtype=np.float32)
    fl = rng.random((5, 3, 4, 2), dtype=np.float32)
    ref = numvox.correlate_batch(im, fl, **kw)
    for ichunks, filters in (((2, 1, 4), da.from_array(fl, chunks=(1, 3, 2, 1))), (3, fl)):
        res = nd.correlate_batch(da.from_array(im, chunks=(ichunks, 5, 10, 1)), filters, **kw)
        if kw.get("reduce") == "argmax":
            assert all(isinstance(r, da.Array) for r in res)
            vals, pos = (r.compute() for r in res)
            np.testing.assert_array_equal(vals, ref[0])
            np.testing.assert_array_equal(pos, ref[1])
            assert pos.dtype == np.int64
        else:
            assert isinstance(res, da.Array)
            got = res.compute()
            assert got.dtype == ref.dtype
            np.testing.assert_array_equal(got, ref)


def test_correlate_float64_1d_and_empty(client):
    rng = np.random.default_rng(9)
    im, fl = rng.random((5, 30)), rng.random((3, 7))
    got = nd.correlate_batch(da.from_array(im, chunks=2), da.from_array(fl, chunks=2), mode="full").compute()
    np.testing.assert_array_equal(got, numvox.correlate_batch(im, fl, mode="full"))
    e = nd.correlate_batch(da.zeros((0, 30), chunks=1), fl, reduce="max").compute()
    assert e.shape == (0, 3)
    with pytest.raises(ValueError):
        nd.correlate_batch(da.from_array(im), fl[:, None])


# -- CLI -----------------------------------------------------------------------------------
def _labels_parser():
    from numvox.dask.cli import add_dask_arguments

    p = argparse.ArgumentParser()
    p.add_argument("volume")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--border", default="inside")
    p.add_argument("--basins")
    p.add_argument("--backend", default=None)
    add_dask_arguments(p)
    return p


def test_cli_run_labels_zarr_on_cluster(client, tmp_path, capsys):
    from numvox.labels.cli import run_labels

    zarr = pytest.importorskip("zarr")
    v = np.random.default_rng(10).integers(0, 5, (9, 8, 7)).astype(np.float32)
    da.from_array(v, chunks=(4, 3, 5)).to_zarr(str(tmp_path / "v.zarr"))
    args = _labels_parser().parse_args([
        str(tmp_path / "v.zarr"), "-o", str(tmp_path / "l.zarr"), "--dask", "--scheduler",
        client.scheduler.address, "--basins", str(tmp_path / "b.zarr"), "--border", "zero"])
    assert run_labels(args) == 0
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "l.zarr"))[...],
                                  numvox.descent_labels(v, border="zero"))
    basins = numvox.descent_basins(v)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "b.zarr"))[...], basins)
    assert f"{basins.max()} basins" in capsys.readouterr().err


def test_cli_run_labels_npy_local(tmp_path, capsys):
    from numvox.labels.cli import run_labels

    v = np.random.default_rng(11).integers(0, 5, (9, 8, 7)).astype(np.int16)
    np.save(tmp_path / "v.npy", v)
    args = _labels_parser().parse_args([
        str(tmp_path / "v.npy"), "-o", str(tmp_path / "l.npy"), "--dask", "--chunks", "4,5,3",
        "--basins", str(tmp_path / "b.npy")])
    assert run_labels(args) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), numvox.descent_labels(v))
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), numvox.descent_basins(v))
    assert "Completed" in capsys.readouterr().err  # dask's progress bar


def test_cli_npy_output_gathered_from_cluster(client, tmp_path):
    from numvox.labels.cli import run_labels

    v = np.random.default_rng(12).integers(0, 5, (6, 7, 8)).astype(np.uint8)
    np.save(tmp_path / "v.npy", v)
    args = _labels_parser().parse_args([
        str(tmp_path / "v.npy"), "-o", str(tmp_path / "l.npy"), "--dask", "--chunks", "3",
        "--scheduler", client.scheduler.address])
    assert run_labels(args) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), numvox.descent_labels(v))


def test_cli_user_errors(tmp_path):
    from numvox.cli import UserError
    from numvox.labels.cli import run_labels

    p = _labels_parser()
    with pytest.raises(UserError, match="does not exist"):
        run_labels(p.parse_args([str(tmp_path / "nope.zarr"), "-o", "x.zarr", "--dask"]))
    np.save(tmp_path / "v.npy", np.zeros((3, 3, 3)))
    with pytest.raises(UserError, match="--chunks"):
        run_labels(p.parse_args([str(tmp_path / "v.npy"), "-o", "x.zarr", "--dask", "--chunks", "a,b"]))
    with pytest.raises(UserError, match="outputs"):
        run_labels(p.parse_args([str(tmp_path / "v.npy"), "-o", str(tmp_path / "x.txt"), "--dask"]))


# -- CUDA kernels inside the chunks (simulator: NUMBA_ENABLE_CUDASIM=1 pytest -m cuda) -------
@pytest.mark.cuda
def test_labels_and_basins_with_cuda_chunks(cuda_backend):
    """backend='cuda' runs the whole-volume CUDA kernels on each haloed chunk (the path CuPy
    chunks take on a GPU cluster); synchronous scheduler, tiny volume for the simulator."""
    v = np.random.default_rng(13).integers(0, 3, (5, 4, 3)).astype(np.float32)
    x = da.from_array(v, chunks=(2, 4, 2))
    for border in ("inside", "zero"):
        got = nd.descent_labels(x, border=border, backend="cuda").compute(scheduler="sync")
        np.testing.assert_array_equal(np.asarray(got), numvox.descent_labels(v, border=border))
    got = nd.descent_basins(x, backend="cuda").compute(scheduler="sync")
    np.testing.assert_array_equal(got, numvox.descent_basins(v))
