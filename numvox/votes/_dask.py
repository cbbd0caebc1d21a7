"""Dask driver of :func:`numvox.aggregate_votes` (exported as ``aggregate_votes_dask``,
re-exported as :func:`numvox.dask.aggregate_votes`).

Votes may land anywhere in the volume, so an output chunk can receive votes from any input
chunk.  Two plans:

* **Scatter plan** (default, offsets of any size): every input chunk computes its votes with
  *global* coordinates (the in-memory arithmetic exactly: ``global index + offset`` in
  float64, range checks in float, contributions rounded to float32), sums duplicates, and
  splits them by destination chunk into sparse partials (at most one entry per destination
  voxel, so never more than a chunk's worth per destination; an input chunk's partials
  together hold at most ``8 L`` entries per voxel of the chunk).  Each output chunk then
  sums the partials of every input chunk in a tree of ``split_every``-way float64 additions,
  so no task ever holds more than ``split_every`` input chunks' partials plus one dense
  chunk.  The graph has ``n_out * n_in / split_every`` gathering tasks: fine for thousands of
  chunks, while the halo plan below is linear.
* **Halo plan** (``max_offset=R``: the caller promises ``|offset| <= R`` along every axis
  for every vote that lands in the volume): each output chunk is computed from its input
  chunk plus a halo of ``ceil(R) + 1`` voxels, like ``map_overlap``; a vote breaking the
  promise raises ValueError instead of being lost.  Linear in the number of chunks.

The blocks run :func:`numvox.votes._cpu.block_votes`, which reads, thresholds and lands votes
with the helpers of the in-memory CPU kernel (the landing rule of :mod:`numvox.votes._splat`).
Both plans accumulate in float64 and round once to float32; the in-memory call accumulates in
float32 in an order that depends on its thread split.  The results are therefore equal
wherever the float32 sums are exact (e.g. probabilities with few significant bits) and
otherwise agree to float32 rounding of the sums (relative 1e-6 of the vote mass).
"""

import math

import numpy as np

from .._shared.arrays import to_host
from .._shared.chunks import as_dask, assemble, bounds, dask_array, drop_empty_chunks, store_out
from .._shared.halfprec import kernel_view
from .._shared.validate import check_choice, check_number
from ._rules import LAYOUTS, SPLATS, check_vote_inputs, known_shape, votes_output_specs


def _min_chunks(chunks, h):
    """Chunks of one axis merged so that each is at least ``h`` long (when there are 2+)."""
    if len(chunks) < 2 or min(chunks) >= h:
        return tuple(chunks)
    out = []
    for c in chunks:
        if out and out[-1] < h:
            out[-1] += c
        else:
            out.append(c)
    if len(out) > 1 and out[-1] < h:
        last = out.pop()
        out[-1] += last
    return tuple(out)


def aggregate_votes_dask(probs, offsets, *, threshold=0.5, splat="nearest", offset_layout="axis-major",
                         out=None, backend=None, max_offset=None, split_every=8):
    """Vote heatmaps of Dask ``probs`` / ``offsets`` (lazy; see the module notes).

    Parameters
    ----------
    probs, offsets : dask.array.Array
        As in :func:`numvox.aggregate_votes`: ``(X, Y, Z, L+1)`` / ``(X, Y, Z, 3L)``, or with a
        leading batch axis; chunked along any of the batch and spatial axes (the channel axis
        is brought into one chunk); ``offsets`` is rechunked like ``probs``.
    threshold, splat, offset_layout
        As in :func:`numvox.aggregate_votes`.
    out : array, optional
        A NumPy or Zarr float32 array of the result's shape to compute into (returned).
    backend : {None, "cpu"}
        The chunk kernels run on the CPU (the votes' bookkeeping is host code; CuPy chunks
        are copied to the host chunk by chunk).
    max_offset : float, optional
        Promise that every vote landing in the volume has ``|offset| <= max_offset`` along each
        axis: enables the halo plan (ValueError at compute time when broken).
    split_every : int
        Fan-in of the tree that sums partial heatmaps (scatter plan).

    Returns
    -------
    heatmaps : dask.array.Array of float32, ``(L, X, Y, Z)`` or ``(B, L, X, Y, Z)``, or ``out``
    """
    da = dask_array()
    P = as_dask(probs, "probs")
    O = offsets if hasattr(offsets, "dask") else None
    O = as_dask(offsets, "offsets", required=False) if O is None else O
    L = check_vote_inputs(P, O)
    thr = check_number(threshold, "threshold")
    check_choice(splat, "splat", SPLATS)
    check_choice(offset_layout, "offset_layout", LAYOUTS)
    if backend not in (None, "cpu"):
        raise ValueError(f"numvox.dask.aggregate_votes runs its chunks on the CPU; got backend={backend!r}")
    if max_offset is not None:
        max_offset = check_number(max_offset, "max_offset", minimum=0)
    split_every = check_number(split_every, "split_every", minimum=2, integer=True)
    batched = P.ndim == 5
    if not batched:
        P, O = P[None], O[None]
    P = drop_empty_chunks(P.rechunk({4: -1}))
    h = None if max_offset is None else int(math.ceil(max_offset)) + 1
    if h is not None:
        P = P.rechunk(tuple([P.chunks[0]] + [_min_chunks(P.chunks[a], h) for a in (1, 2, 3)] + [P.chunks[4]]))
    O = O.rechunk(P.chunks[:4] + (O.shape[4],))
    shape = tuple(int(s) for s in P.shape[:4])
    [(out_shape, dtype)] = votes_output_specs({"probs": known_shape(P), "offsets": known_shape(O)},
                                              {"probs": P.dtype, "offsets": O.dtype}, {})
    out_chunks = (P.chunks[0], (L,), P.chunks[1], P.chunks[2], P.chunks[3])
    if P.size == 0 or O.size == 0:
        res = da.zeros(tuple(out_shape), dtype=dtype, chunks=out_chunks)
    else:
        kw = dict(thr=thr, L=L, landmark_major=offset_layout == "landmark-major", linear=splat == "linear",
                  shape=shape[1:])
        if h is None:
            res = _scatter_plan(P, O, out_chunks, split_every, kw)
        else:
            res = _halo_plan(P, O, out_chunks, h, max_offset, kw)
    if not batched:
        res = res[0]
    return store_out(res, out)


# -- halo plan -----------------------------------------------------------------------------
def _halo_block(pb, ob, origin, core_lo, core_hi, max_offset, kw):
    from ._cpu import scatter_dense

    Pk, pcode = kernel_view(np.ascontiguousarray(to_host(pb)))  # one compiled layout (chunk-sized copy at most)
    Ok, ocode = kernel_view(np.ascontiguousarray(to_host(ob)))
    dense, bad = scatter_dense(Pk, pcode, Ok, ocode, origin, core_lo, core_hi, kw["thr"], kw["L"],
                               kw["landmark_major"], kw["linear"], kw["shape"], max_offset)
    if bad:
        raise ValueError(
            f"{int(bad)} vote(s) of the voxels {tuple(core_lo)}..{tuple(h - 1 for h in core_hi)} have "
            f"offsets larger than max_offset={max_offset}; pass a larger max_offset or None"
        )
    return dense.astype(np.float32)


def _halo_plan(P, O, out_chunks, h, max_offset, kw):
    da = dask_array()
    from dask import delayed

    num = tuple(len(c) for c in P.chunks[:4])
    depth = {a: (h if num[a] > 1 else 0) for a in (1, 2, 3)}
    depth[0] = depth[4] = 0
    Pb = da.overlap.overlap(P, depth=depth, boundary="none").to_delayed()
    Ob = da.overlap.overlap(O, depth=depth, boundary="none").to_delayed()
    bnds = bounds(P.chunks[:4])
    out = np.empty((num[0], 1) + num[1:], dtype=object)
    for loc in np.ndindex(*num):
        core_lo = [int(bnds[a][loc[a]]) for a in (1, 2, 3)]
        core_hi = [int(bnds[a][loc[a] + 1]) for a in (1, 2, 3)]
        origin = [int(bnds[0][loc[0]])] + [core_lo[i] - (depth[i + 1] if loc[i + 1] > 0 else 0) for i in range(3)]
        out[(loc[0], 0) + loc[1:]] = delayed(_halo_block, pure=True)(
            Pb[loc + (0,)], Ob[loc + (0,)], origin, core_lo, core_hi, max_offset, kw)
    return assemble(out, out_chunks, np.float32)


# -- scatter plan --------------------------------------------------------------------------
def _scatter_block(pb, ob, origin, out_bnds, kw):
    """Sparse partials of one input block, by destination block: {loc: (flat, values)}."""
    from ._cpu import scatter_sparse

    Pk, pcode = kernel_view(np.ascontiguousarray(to_host(pb)))
    Ok, ocode = kernel_view(np.ascontiguousarray(to_host(ob)))
    keys, vals = scatter_sparse(Pk, pcode, Ok, ocode, origin, kw["thr"], kw["L"], kw["landmark_major"],
                                kw["linear"], kw["shape"])
    if keys.size == 0:
        return {}
    ukeys, inv = np.unique(keys, return_inverse=True)
    sums = np.bincount(inv.reshape(-1), weights=vals, minlength=ukeys.size)
    L = kw["L"]
    X, Y, Z = kw["shape"]
    iz = ukeys % Z
    r = ukeys // Z
    iy = r % Y
    r //= Y
    ix = r % X
    r //= X
    ll = r % L
    gb = r // L
    coords = (gb, ix, iy, iz)
    bidx = [np.searchsorted(out_bnds[a], coords[a], side="right") - 1 for a in range(4)]
    nums = [len(b) - 1 for b in out_bnds]
    lin = ((bidx[0] * nums[1] + bidx[1]) * nums[2] + bidx[2]) * nums[3] + bidx[3]
    order = np.argsort(lin, kind="stable")
    lin_sorted = lin[order]
    starts = np.flatnonzero(np.r_[True, lin_sorted[1:] != lin_sorted[:-1]])
    ends = np.r_[starts[1:], lin_sorted.size]
    parts = {}
    for s, e in zip(starts, ends):
        sel = order[s:e]
        loc = tuple(int(bidx[a][sel[0]]) for a in range(4))
        lo = [out_bnds[a][loc[a]] for a in range(4)]
        ext = [out_bnds[a][loc[a] + 1] - lo[a] for a in range(4)]
        flat = ((((gb[sel] - lo[0]) * L + ll[sel]) * ext[1] + (ix[sel] - lo[1])) * ext[2]
                + (iy[sel] - lo[2])) * ext[3] + (iz[sel] - lo[3])
        parts[loc] = (flat, sums[sel])
    return parts


def _combine(shape, *parts):
    """Sum of dense partials (or None) into one float64 chunk (or None)."""
    acc = None
    for p in parts:
        if p is None:
            continue
        if acc is None:
            acc = p.copy()
        else:
            acc += p
    return acc


def _gather(loc, shape, *part_dicts):
    """The dense float64 sum of the partials that ``part_dicts`` hold for block ``loc``."""
    acc = None
    for parts in part_dicts:
        p = parts.get(loc)
        if p is None:
            continue
        if acc is None:
            acc = np.zeros(shape, np.float64)
        flat, vals = p
        acc.reshape(-1)[flat] += vals  # keys are unique within a partial
    return acc


def _finish(shape, part):
    if part is None:
        return np.zeros(shape, np.float32)
    return part.astype(np.float32)


def _scatter_plan(P, O, out_chunks, split_every, kw):
    from dask import delayed

    num = tuple(len(c) for c in P.chunks[:4])
    bnds = bounds(P.chunks[:4])
    Pb = P.to_delayed()
    Ob = O.to_delayed()
    parts = {}
    for loc in np.ndindex(*num):
        origin = [int(bnds[a][loc[a]]) for a in range(4)]
        parts[loc] = delayed(_scatter_block, pure=True)(Pb[loc + (0,)], Ob[loc + (0,)], origin, bnds, kw)
    L = kw["L"]
    out = np.empty((num[0], 1) + num[1:], dtype=object)
    for oloc in np.ndindex(*num):
        shape = (P.chunks[0][oloc[0]], L) + tuple(P.chunks[a][oloc[a]] for a in (1, 2, 3))
        inputs = [parts[iloc] for iloc in np.ndindex(*num)]
        level = [delayed(_gather, pure=True)(oloc, shape, *inputs[i:i + split_every])
                 for i in range(0, len(inputs), split_every)]
        while len(level) > 1:
            level = [delayed(_combine, pure=True)(shape, *level[i:i + split_every])
                     for i in range(0, len(level), split_every)]
        out[(oloc[0], 0) + oloc[1:]] = delayed(_finish, pure=True)(shape, level[0])
    return assemble(out, out_chunks, np.float32)
