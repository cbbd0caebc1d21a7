"""Dask drivers of :func:`numvox.descent_labels` and :func:`numvox.descent_basins`
(re-exported by :mod:`numvox.dask` as ``descent_labels`` and ``descent_basins``).

Labels
------
Each output chunk is computed from its input chunk plus a one-voxel halo on every face that
is not a face of the whole volume (``dask.array.overlap.overlap(..., boundary="none")``),
through :func:`._cpu.labels_block_cpu`, which is told which faces are true volume
faces: the result is bit-identical to the whole-volume call, ``border="zero"`` included,
whatever the chunking (chunks of one voxel too).  Chunks that are not NumPy (CuPy) go through
the in-memory driver on the haloed block (trimmed afterwards), which gives the same
labels since every kept voxel has its full neighbourhood in the block.

Basins
------
Four stages, none of which holds more than a few chunks' worth of data:

1. per chunk: labels (as above), chunk-local basins (:func:`._cpu.chunk_basins_cpu`: the
   edges that leave the chunk are cut, i.e. those voxels are made to point at themselves, and
   the in-memory basin code runs on the chunk), and a small summary: the global flat index of
   each local component's first voxel (its *key*), the edges that leave the chunk (source
   component, target voxel), and the component ids on the chunk's six boundary layers;
2. per chunk: its leaving edges resolved against the boundary layers of the (up to 26)
   neighbouring chunks into unique component pairs;
3. one merge task: union-find (:func:`._cpu.merge_components`, the in-memory ``_find`` /
   ``_union``) over all chunk-local components joined by these pairs; a basin's
   first voxel in C order is the smallest key of its components, so sorting the basins'
   keys gives exactly the in-memory ``1..M`` numbering; the result is one lookup table
   (local id -> basin id) per chunk;
4. per chunk: stage 1's local ids are recomputed from a *clone* of the input graph (so the
   inputs are read again rather than held in memory between the stages) and mapped through
   the chunk's table.

The merge task holds 8 bytes per chunk-local component plus the boundary pairs: for smooth
volumes a tiny fraction of the voxel count.
"""

import numpy as np

from numvox._shared.arrays import to_host
from numvox._shared.chunks import as_dask, assemble, bounds, dask_array, drop_empty_chunks, numpy_meta, store_out
from numvox._shared.validate import check_choice

from ._cpu import apply_lut, chunk_basins_cpu, first_keys, labels_block_cpu, merge_components, zero_true_faces
from ._inmemory import labels_in_memory
from ._rules import BORDERS, basins_output_specs, check_volume, labels_output_specs, output_of


def _faces(loc, num):
    return tuple((bool(loc[a] == 0), bool(loc[a] == num[a] - 1)) for a in range(3))


def block_labels(block, faces, border="inside", backend=None):
    """Labels of the core of a haloed block (see the module notes)."""
    if isinstance(block, np.ndarray) and backend in (None, "cpu"):
        return labels_block_cpu(block, faces, border=border)
    lab = labels_in_memory(block, "inside", None, backend)
    core = tuple(slice(0 if lo else 1, None if hi else -1) for lo, hi in faces)
    lab = lab[core].copy()
    if border == "zero":
        zero_true_faces(lab, faces)
    return lab


def _halo(x):
    da = dask_array()
    return da.overlap.overlap(x, depth={0: 1, 1: 1, 2: 1}, boundary="none")


def _prepare(volume):
    x = as_dask(volume, "volume")
    check_volume(x)
    return drop_empty_chunks(x)


def descent_labels_dask(volume, *, border="inside", out=None, backend=None):
    """Steepest-descent labels of a Dask volume, chunk by chunk (lazy).

    Parameters
    ----------
    volume : dask.array.Array, 3-D
        Any real dtype, any chunking (chunks of one voxel too); NumPy or CuPy chunks.
    border, backend
        As in :func:`numvox.descent_labels` (``backend`` is used inside every chunk).
    out : array, optional
        A NumPy array (filled in this process) or a Zarr array (written by the workers) of
        uint8 and the volume's shape; when given, the labels are computed into it and it is
        returned.

    Returns
    -------
    labels : dask.array.Array of uint8 (the volume's chunks), or ``out``
        Exactly :func:`numvox.descent_labels` of the whole volume.

    Raises
    ------
    TypeError, ValueError
        At call time for a non-Dask input, bad dtype, non-3-D input or bad ``border``;
        at compute time (ValueError) for NaN / infinite values (the count is that of the
        first chunk found with them).
    """
    check_choice(border, "border", BORDERS)
    x = _prepare(volume)
    _, dtype = output_of(labels_output_specs, x, {"border": border})
    if x.size == 0:
        da = dask_array()
        return store_out(da.zeros(x.shape, dtype=dtype, chunks=x.chunks), out)
    num = tuple(len(c) for c in x.chunks)

    def fn(block, block_info=None):
        loc = block_info[None]["chunk-location"]
        return block_labels(block, _faces(loc, num), border=border, backend=backend)

    res = _halo(x).map_blocks(fn, chunks=x.chunks, dtype=dtype, meta=numpy_meta(x, dtype, 3))
    return store_out(res, out)


# -- basins --------------------------------------------------------------------------------
def _local(block, loc, num, origin, shape, backend):
    """Stage 1/4 core: labels, then chunk-local basins.

    Returns ``(ids, m, flat, target)``: int32 ids numbered ``1..m`` in C order of their first
    voxels (the whole-volume basin code run on the block with its leaving edges cut), and the
    leaving edges (block-local flat index of the source voxel, global flat index of its target).
    """
    lab = block_labels(block, _faces(loc, num), border="inside", backend=backend)
    # a CuPy chunk's labels: the merge bookkeeping runs on the host
    return chunk_basins_cpu(to_host(lab), origin, shape)


def _summary(block, loc, num, origin, shape, backend):
    ids, m, flat, target = _local(block, loc, num, origin, shape, backend)
    o = [np.int64(v) for v in origin]
    keys = first_keys(ids, np.int64(m), o[0], o[1], o[2], np.int64(shape[1]), np.int64(shape[2]))
    esrc = ids.reshape(-1)[flat] - 1  # 0-based local component ids (int32)
    faces = (ids[0].copy(), ids[-1].copy(), ids[:, 0].copy(), ids[:, -1].copy(),
             ids[:, :, 0].copy(), ids[:, :, -1].copy())  # 1-based
    return keys, (esrc, target), faces


def _resolve(edges, loc, bnds, shape, neighbour_faces):
    """Unique ``(source component, neighbour block, neighbour component)`` rows of one
    block's leaving edges; ``neighbour_faces`` maps block index -> its boundary layers."""
    esrc, etgt = edges
    if esrc.size == 0:
        return np.empty((0, 3), np.int64)
    n1, n2 = shape[1], shape[2]
    t = [etgt // (n1 * n2), (etgt // n2) % n1, etgt % n2]
    bi = [np.searchsorted(bnds[a], t[a], side="right") - 1 for a in range(3)]
    nums = [len(b) - 1 for b in bnds]
    lin = (bi[0] * nums[1] + bi[1]) * nums[2] + bi[2]
    comp = np.empty(esrc.size, np.int64)
    for key in np.unique(lin):
        sel = np.nonzero(lin == key)[0]
        nb = (int(bi[0][sel[0]]), int(bi[1][sel[0]]), int(bi[2][sel[0]]))
        faces = neighbour_faces[nb]
        loc_t = [t[a][sel] - bnds[a][nb[a]] for a in range(3)]
        # the target is on the neighbour's boundary layer along an axis where it left us
        got = np.full(sel.size, -1, np.int64)
        for a in range(3):
            if nb[a] == loc[a]:
                continue
            side = 1 if nb[a] < loc[a] else 0  # below us: its last layer; above: its first
            layer = faces[2 * a + side]
            other = [loc_t[b] for b in range(3) if b != a]
            todo = got < 0
            got[todo] = layer[other[0][todo], other[1][todo]].astype(np.int64) - 1
        comp[sel] = got
    rows = np.stack([esrc.astype(np.int64), lin, comp], axis=1)
    return np.unique(rows, axis=0)


def _merge(nums, all_keys, all_pairs):
    """Stage 3: lookup tables (local id -> global basin id, int32) of every block."""
    sizes = np.array([k.size for k in all_keys], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    keys = np.concatenate(all_keys) if all_keys else np.empty(0, np.int64)
    a_parts, b_parts = [], []
    for blk, pairs in enumerate(all_pairs):
        if pairs.size:
            a_parts.append(offsets[blk] + pairs[:, 0])
            b_parts.append(offsets[pairs[:, 1]] + pairs[:, 2])
    a = np.concatenate(a_parts) if a_parts else np.empty(0, np.int64)
    b = np.concatenate(b_parts) if b_parts else np.empty(0, np.int64)
    gid = merge_components(keys, a, b)
    if gid.size and gid.max() > np.iinfo(np.int32).max:
        raise ValueError(f"the volume has {int(gid.max())} basins, more than int32 basin ids can number")
    gid = gid.astype(np.int32)
    return [gid[offsets[i]:offsets[i + 1]] for i in range(len(all_keys))]


def _relabel(block, lut, loc, num, origin, shape, backend):
    ids = _local(block, loc, num, origin, shape, backend)[0]
    apply_lut(ids, lut, ids)  # in place: every id is read before it is overwritten
    return ids


def descent_basins_dask(volume, *, backend=None):
    """Descent basins of a Dask volume (lazy): chunk-local basins merged across chunks.

    Parameters
    ----------
    volume : dask.array.Array, 3-D
        Any real dtype, any chunking.
    backend
        As in :func:`numvox.descent_basins`; used for the labels inside every chunk.

    Returns
    -------
    basins : dask.array.Array of int32 (the volume's chunks)
        Exactly :func:`numvox.descent_basins` of the whole volume: weakly connected components
        of the voxel -> descent-target graph, numbered ``1..M`` in the C order of each basin's
        first voxel.  Computing it runs the whole pipeline described in the module notes
        (the volume's chunks are read twice).

    Raises
    ------
    TypeError, ValueError
        As :func:`descent_labels_dask` (NaN / inf at compute time).
    """
    da = dask_array()
    from dask import delayed
    from dask.graph_manipulation import clone

    x = _prepare(volume)
    shape, dtype = output_of(basins_output_specs, x, {})
    if x.size == 0:
        return da.zeros(shape, dtype=dtype, chunks=x.chunks)
    num = tuple(len(c) for c in x.chunks)
    bnds = bounds(x.chunks)
    grid = list(np.ndindex(*num))
    lin = {loc: i for i, loc in enumerate(grid)}

    halo = _halo(x)
    blocks = halo.to_delayed()
    keys, edges, faces = {}, {}, {}
    for loc in grid:
        origin = tuple(int(bnds[a][loc[a]]) for a in range(3))
        s = delayed(_summary, nout=3, pure=True)(blocks[loc], loc, num, origin, shape, backend)
        keys[loc], edges[loc], faces[loc] = s[0], s[1], s[2]
    pairs = []
    for loc in grid:
        nbrs = {}
        for d in np.ndindex(3, 3, 3):
            nb = tuple(loc[a] + d[a] - 1 for a in range(3))
            if nb != loc and all(0 <= nb[a] < num[a] for a in range(3)):
                nbrs[nb] = faces[nb]
        pairs.append(delayed(_resolve, pure=True)(edges[loc], loc, bnds, shape, nbrs))
        # _resolve returns rows (src, neighbour linear index, neighbour comp); linear index
        # order is C order of block locations, the same as ``grid``
    luts = delayed(_merge, nout=len(grid), pure=True)(num, [keys[loc] for loc in grid], pairs)

    blocks2 = clone(halo).to_delayed()
    out = np.empty(num, dtype=object)
    for loc in grid:
        origin = tuple(int(bnds[a][loc[a]]) for a in range(3))
        out[loc] = delayed(_relabel, pure=True)(blocks2[loc], luts[lin[loc]], loc, num, origin, shape, backend)
    return assemble(out, x.chunks, dtype, meta=np.empty((0, 0, 0), dtype))
