"""The public in-memory functions hand Dask arrays to numvox.dask and give the same values."""

import numpy as np
import pytest

import numvox

da = pytest.importorskip("dask.array")


def test_descent_labels_and_basins_route_dask_inputs():
    vol = np.random.default_rng(1).integers(0, 5, (9, 7, 8)).astype(np.int16)
    lazy = da.from_array(vol, chunks=(4, 3, 5))
    labels = numvox.descent_labels(lazy, border="zero")
    basins = numvox.descent_basins(lazy)
    assert isinstance(labels, da.Array) and isinstance(basins, da.Array)
    np.testing.assert_array_equal(labels.compute(scheduler="synchronous"), numvox.descent_labels(vol, border="zero"))
    np.testing.assert_array_equal(basins.compute(scheduler="synchronous"), numvox.descent_basins(vol))


def test_aggregate_votes_and_correlate_route_dask_inputs():
    rng = np.random.default_rng(2)
    probs = (rng.integers(0, 5, (6, 5, 4, 3)) / 4).astype(np.float32)  # exact float32 sums
    offsets = rng.integers(-3, 4, (6, 5, 4, 6)).astype(np.float32)
    heat = numvox.aggregate_votes(da.from_array(probs, chunks=(3, 5, 2, 3)), offsets, threshold=0.25)
    np.testing.assert_array_equal(
        np.asarray(heat.compute(scheduler="synchronous")), numvox.aggregate_votes(probs, offsets, threshold=0.25)
    )
    images, filters = rng.random((4, 9, 8)), rng.random((3, 3, 3))
    res = numvox.correlate_batch(da.from_array(images, chunks=(2, 9, 8)), filters, reduce="max")
    res = res.compute(scheduler="synchronous") if hasattr(res, "compute") else res
    np.testing.assert_allclose(res, numvox.correlate_batch(images, filters, reduce="max"), rtol=1e-12)
