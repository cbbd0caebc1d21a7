"""Chunk helpers shared by the families' Dask drivers (``numvox/<family>/_dask.py``): input
checks, chunk geometry, assembling blocks, storing results.  Dask is imported only inside these
functions, so importing this module costs nothing without Dask."""

import itertools

import numpy as np

from .arrays import READABLE, REFUSED_KINDS, is_dask
from .halfprec import NATIVE, half_code


def dask_array():
    """``dask.array`` (imported here only: imported only when a Dask driver runs)."""
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - dask is a dependency of this sub-package
        raise ImportError("numvox's Dask drivers need Dask: pip install 'dask[array]' distributed") from exc
    return da


def as_dask(x, name, *, required=True):
    """``x`` itself when it is a Dask array; NumPy-like inputs become a one-chunk Dask array
    (only when ``required`` is False, for secondary inputs such as ``filters``).

    The input policy of the in-memory functions holds here too: None raises TypeError naming
    the argument, dtypes no kernel reads raise TypeError, and chunks in non-native byte order
    are converted to native order as they are computed (one copy per chunk)."""
    if x is None:
        raise TypeError(f"{name} is None; expected an array")
    if is_dask(x):
        if any(np.isnan(c) for cs in x.chunks for c in cs):
            raise ValueError(
                f"{name} has unknown chunk sizes (shape {x.shape}); call "
                f"{name}.compute_chunk_sizes() first"
            )
        dtype = np.dtype(x.dtype)
        if half_code(dtype) == NATIVE and dtype.kind in REFUSED_KINDS:
            raise TypeError(f"{name} has dtype {dtype} ({REFUSED_KINDS[dtype.kind]}); expected a {READABLE} dtype")
        if half_code(dtype) == NATIVE and not dtype.isnative:
            x = x.astype(dtype.newbyteorder("="))
        return x
    if required:
        raise TypeError(
            f"{name} must be a dask.array.Array for numvox.dask; got {type(x).__name__} "
            f"(call the in-memory numvox function for in-memory arrays)"
        )
    da = dask_array()
    arr = np.asarray(x)
    return da.from_array(arr, chunks=arr.shape or ())


def drop_empty_chunks(x):
    """Rechunk ``x`` so that no chunk has a zero-length axis (unless the axis itself is
    empty): blocks with halos assume at least one voxel per chunk."""
    new = []
    changed = False
    for c in x.chunks:
        kept = tuple(s for s in c if s > 0)
        if len(kept) != len(c) and kept:
            changed = True
            new.append(kept)
        else:
            new.append(c)
    return x.rechunk(tuple(new)) if changed else x


def bounds(chunks):
    """Per axis: the start offset of every chunk plus the axis length at the end."""
    return [np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in chunks]


def block_indices(chunks):
    """All block indices of a chunk structure, in C order."""
    return itertools.product(*(range(len(c)) for c in chunks))


def assemble(blocks, chunks, dtype, meta=None):
    """One Dask array from an ndarray (object) of Delayed blocks of the given chunks."""
    da = dask_array()
    grid = np.empty(tuple(len(c) for c in chunks), dtype=object)
    for idx in block_indices(chunks):
        shape = tuple(c[i] for c, i in zip(chunks, idx))
        kw = {} if meta is None else {"meta": meta}
        grid[idx] = da.from_delayed(blocks[idx], shape=shape, dtype=dtype, **kw)
    return da.block(grid.tolist()) if grid.size else da.empty(tuple(sum(c) for c in chunks), dtype=dtype)


def store_out(result, out):
    """``result`` when ``out`` is None; else ``result`` written into ``out`` (a NumPy array,
    filled in the client process, or a Zarr / any ``__setitem__`` array, written by the
    workers), which is returned."""
    if out is None:
        return result
    if tuple(out.shape) != tuple(result.shape) or np.dtype(out.dtype) != np.dtype(result.dtype):
        raise ValueError(
            f"out has shape {tuple(out.shape)} and dtype {np.dtype(out.dtype)}; expected shape "
            f"{tuple(result.shape)} and dtype {np.dtype(result.dtype)}"
        )
    if isinstance(out, np.ndarray):
        if not out.flags.writeable:
            raise ValueError("out must be writeable")
        out[...] = result.compute()
    else:
        da = dask_array()
        da.store(result, out, lock=False, compute=True)
    return out


def numpy_meta(x, dtype, ndim):
    """An empty array of the chunk type of ``x`` (NumPy or CuPy) with ``dtype`` and ``ndim``."""
    meta = getattr(x, "_meta", None)
    if meta is None or isinstance(meta, np.ndarray):
        return np.empty((0,) * ndim, dtype)
    return meta.reshape(-1)[:0].astype(dtype).reshape((0,) * ndim)  # CuPy chunks

