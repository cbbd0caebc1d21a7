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

from numvox._shared.halfprec import NATIVE, half_code

from ._common import as_dask, assemble, dask_array, drop_empty_chunks, store_out

MODES = ("full", "same", "valid")


def _single(dtype):
    dtype = np.dtype(dtype)
    return dtype == np.float32 or half_code(dtype) != NATIVE


def _resolve_method(A, B, mode, channel_axis, method):
    """The method the in-memory call would choose for the whole problem (``"auto"`` only)."""
    if method != "auto":
        return method
    try:
        from numvox.correlate._api import _geometry, choose_method
    except ImportError:  # pragma: no cover - in-memory API reorganised: let each block choose
        return method

    class _HostCall:
        device_arrays = False

    return choose_method(_geometry(tuple(A.shape), tuple(B.shape), mode, channel_axis), _HostCall())


def _out_shape(A, B, mode, channel_axis):
    """Per-pair output shape (the in-memory function validates everything else)."""
    nd = A.ndim
    ca = None if channel_axis is None else int(channel_axis) % nd
    S = [A.shape[a] for a in range(1, nd) if a != ca]
    s = [B.shape[a] for a in range(1, nd) if a != ca]
    if mode == "full":
        return tuple(x + y - 1 for x, y in zip(S, s))
    if mode == "same":
        return tuple(S)
    return tuple(x - y + 1 for x, y in zip(S, s))


def _pair_block(a, b, kw, reduce, nd):
    from numvox.correlate import correlate_batch as corr

    r = corr(a, b, reduce=reduce, **kw)
    if reduce == "argmax":
        vals, pos = r
        packed = np.empty(vals.shape + (1 + nd,), np.float64)  # positions < 2**53: exact
        packed[..., 0] = vals
        packed[..., 1:] = pos
        return packed
    return r


def correlate_batch(images, filters, *, mode="same", channel_axis=None, reduce=None, normalize=False,
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
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    if reduce not in (None, "max", "argmax"):
        raise ValueError(f"reduce must be None, 'max' or 'argmax'; got {reduce!r}")
    if A.ndim != B.ndim or A.ndim < 2:
        raise ValueError(
            f"images has shape {tuple(A.shape)} and filters has shape {tuple(B.shape)}; they need the same "
            "number of dimensions: (N, *item) and (K, *item)"
        )
    if channel_axis is not None and not -A.ndim <= int(channel_axis) < A.ndim:
        raise ValueError(f"channel_axis={channel_axis} is out of range for images of shape {tuple(A.shape)}")
    A = drop_empty_chunks(A.rechunk({a: -1 for a in range(1, A.ndim)}))
    B = drop_empty_chunks(B.rechunk({a: -1 for a in range(1, B.ndim)}))
    method = _resolve_method(A, B, mode, channel_axis, method)
    O = _out_shape(A, B, mode, channel_axis)
    out_dtype = np.float32 if (_single(A.dtype) and _single(B.dtype)) else np.float64
    N, K = int(A.shape[0]), int(B.shape[0])
    kw = dict(mode=mode, channel_axis=channel_axis, normalize=normalize, method=method, progress=False,
              backend=backend)
    if N == 0 or K == 0 or A.chunks[0] == () or B.chunks[0] == ():
        # validate the options on empty items through the in-memory call, then return empties
        from numvox.correlate import correlate_batch as corr

        zeros = [np.broadcast_to(np.zeros((), X.dtype), X.shape) for X in (A, B)]  # no memory
        r = corr(zeros[0], zeros[1], reduce=reduce, **kw)
        res = tuple(da.from_array(x) for x in r) if reduce == "argmax" else da.from_array(r)
        return _store_result(res, out, reduce)
    nd = len(O)
    Ab, Bb = A.to_delayed(), B.to_delayed()
    lead = (0,) * (A.ndim - 1)
    tail = (O if reduce is None else ((1 + nd,) if reduce == "argmax" else ()))
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
    if out is None:
        return res
    if reduce == "argmax":
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError("with reduce='argmax', out must be a (values, positions) pair")
        return (store_out(res[0], out[0]), store_out(res[1], out[1]))
    return store_out(res, out)
