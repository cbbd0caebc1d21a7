"""Dask driver of :func:`numvox.correlate_batch`: blocks of images x blocks of filters.

Every pair's result depends only on that pair, so the ``(N, K, ...)`` result is computed block
by block: block ``(i, j)`` is the in-memory :func:`numvox.correlate_batch` of the ``i``-th
chunk of images with the ``j``-th chunk of filters (items are never split: their axes are
brought into one chunk).  ``method="auto"`` is resolved once, for the whole problem, with the
in-memory cost model, so that every block runs the method the whole-batch call would pick and
the values are identical to it.  Reductions (``"max"``, ``"argmax"``) happen inside each block,
so the full maps are never materialised; the ``(N, K)`` results stay lazy.
"""

import numpy as np

from numvox._shared.chunks import as_dask, assemble, dask_array, drop_empty_chunks, store_out

from ._inmemory import correlate_arrays
from ._rules import check_options, choose_method, geometry, output_specs, split_out


def _pair_block(a, b, kw, reduce, nd):
    r = correlate_arrays(a, b, reduce=reduce, **kw)
    if reduce == "argmax":
        vals, pos = r
        packed = np.empty(vals.shape + (1 + nd,), np.float64)  # positions < 2**53: exact
        packed[..., 0] = vals
        packed[..., 1:] = pos
        return packed
    return r


def correlate_batch_dask(images, filters, *, mode="same", channel_axis=None, reduce=None, normalize=False,
                         method="auto", out=None, progress=False, backend=None):
    """Blocked :func:`numvox.correlate_batch` of Dask ``images`` (and Dask or in-memory
    ``filters``); lazy.

    Parameters
    ----------
    images : dask.array.Array, (N, *S)
        Chunked along N (the item axes are brought into one chunk).
    filters : dask.array.Array or array_like, (K, *s)
        Chunked along K; an in-memory array is one chunk.
    mode, channel_axis, reduce, normalize, method, backend
        As in :func:`numvox.correlate_batch`.
    out : array or (array, array), optional
        NumPy / Zarr array(s) of the result's shape and dtype to compute into (returned).
    progress : bool
        Ignored per block (use Dask's diagnostics: ``dask.diagnostics.ProgressBar`` or
        ``distributed.progress``).

    Returns
    -------
    dask.array.Array, or (values, positions) for ``reduce="argmax"``, or ``out``
        Identical to the in-memory call on the whole batch.
    """
    da = dask_array()
    from dask import delayed

    A = as_dask(images, "images")
    B = as_dask(filters, "filters", required=False)
    mode, reduce, method = check_options(mode, reduce, method, normalize, False, out)
    geom = geometry(A.shape, B.shape, mode, channel_axis)
    A = drop_empty_chunks(A.rechunk({a: -1 for a in range(1, A.ndim)}))
    B = drop_empty_chunks(B.rechunk({a: -1 for a in range(1, B.ndim)}))
    if method == "auto":  # resolved once, for the whole problem, as the in-memory call would
        method = choose_method(geom, False)
    specs = output_specs({"images": list(A.shape), "filters": list(B.shape)},
                         {"images": A.dtype, "filters": B.dtype},
                         {"mode": mode, "channel_axis": channel_axis, "reduce": reduce})
    out_dtype = specs[0][1]
    kw = dict(mode=mode, channel_axis=channel_axis, normalize=normalize, method=method, progress=False,
              backend=backend)
    if geom.N == 0 or geom.K == 0 or A.chunks[0] == () or B.chunks[0] == ():
        # check the dtypes through the in-memory call on empty items, then return empties
        zeros = [np.broadcast_to(np.zeros((), X.dtype), X.shape) for X in (A, B)]  # no memory
        r = correlate_arrays(zeros[0], zeros[1], reduce=reduce, **kw)
        res = tuple(da.from_array(x) for x in r) if reduce == "argmax" else da.from_array(r)
        return _store_result(res, out, reduce)
    nd = len(geom.O)
    Ab, Bb = A.to_delayed(), B.to_delayed()
    lead = (0,) * (A.ndim - 1)
    # per-block shape after the (N, K) axes: the maps, nothing ("max"), or values + positions
    tail = {None: tuple(specs[0][0][2:]), "max": (), "argmax": (1 + nd,)}[reduce]
    chunks = (A.chunks[0], B.chunks[0]) + tuple((t,) for t in tail)
    grid = np.empty((len(A.chunks[0]), len(B.chunks[0])) + (1,) * len(tail), dtype=object)
    for i in range(len(A.chunks[0])):
        for j in range(len(B.chunks[0])):
            grid[(i, j) + (0,) * len(tail)] = delayed(_pair_block, pure=True)(
                Ab[(i,) + lead], Bb[(j,) + lead], kw, reduce, nd)
    dtype = np.float64 if reduce == "argmax" else out_dtype
    res = assemble(grid, chunks, dtype)
    if reduce == "argmax":
        res = (res[..., 0].astype(out_dtype), res[..., 1:].astype(np.int64))
    return _store_result(res, out, reduce)


def _store_result(res, out, reduce):
    if reduce == "argmax":
        out_v, out_p = split_out(out, reduce)
        return (store_out(res[0], out_v), store_out(res[1], out_p))
    return store_out(res, out)
