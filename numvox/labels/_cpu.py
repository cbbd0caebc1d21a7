"""CPU kernels for steepest-descent labels and descent basins.

Labels
------
The volume is cut into tiles of ``1 x TJ x TK`` output voxels.  For each tile a small scratch
block of ``3 x (TJ + 2) x (TK + 2)`` values in the *compute dtype* (float32 or float64, see
``_api.compute_dtype``) is filled from the input (decoding half precision on the fly); voxels
outside the block's array are filled with ``+inf`` so that their score ``c - inf = -inf`` can
never be chosen and the in-volume-only (``border="inside"``) rule needs no special case at
the faces.  The 26 compares per voxel then run as one branch-free loop over the last axis
(``_tile_rows``), which LLVM vectorises: the running best score and label are selects, with
strict ``>`` in ascending neighbour code so the smallest code wins ties (NumPy ``argmax``).
Scores are ``(c - n) * w`` with ``w = 1, 1/sqrt(2), 1/sqrt(3)`` precomputed: no divisions.
Extra memory is one scratch tile per running thread plus a per-tile count array.

Basins
------
Union-find over the voxel -> descent-target edges, with "link the larger root under the
smaller" so every root is its component's smallest flat index (= first voxel in C order):

1. slabs of planes in parallel, each uniting only the edges inside its slab (no races: a
   slab's union-find touches only its own entries);
2. the few edges that cross slab boundaries, serially;
3. full path compression in parallel (threads only ever write a node's root, which every
   concurrent reader also accepts as an ancestor);
4. roots numbered in C order with a per-plane count + prefix sum, then every voxel takes its
   root's number.

The int32 basin array itself is the union-find parent array: no extra memory beyond the
uint8 labels.
"""

import numpy as np
from numba import njit, prange

from numvox._shared.halfprec import NATIVE, load_f64

TJ = 8  # output rows per tile
TK = 256  # output columns per tile


@njit(cache=True)
def _tile_rows(S, out, oi, oj0, ok0, tj, tk, w2, w3):
    """Labels of one tile from its filled scratch ``S`` (3, tj + 2, tk + 2).

    Writes ``out[oi, oj0 + q, ok0 + r]`` for ``q < tj``, ``r < tk``; returns the number of
    non-finite centre values seen.
    """
    bad = 0
    ninf = -np.inf
    for q in range(1, tj + 1):
        p00 = S[0, q - 1]
        p01 = S[0, q]
        p02 = S[0, q + 1]
        p10 = S[1, q - 1]
        p11 = S[1, q]
        p12 = S[1, q + 1]
        p20 = S[2, q - 1]
        p21 = S[2, q]
        p22 = S[2, q + 1]
        orow = out[oi, oj0 + q - 1]
        for r in range(1, tk + 1):
            c = p11[r]
            bad += (c - c) != 0  # NaN or +-inf
            best = ninf
            lab = 13
            s = (c - p00[r - 1]) * w3
            if s > best:
                best = s
                lab = 0
            s = (c - p00[r]) * w2
            if s > best:
                best = s
                lab = 1
            s = (c - p00[r + 1]) * w3
            if s > best:
                best = s
                lab = 2
            s = (c - p01[r - 1]) * w2
            if s > best:
                best = s
                lab = 3
            s = c - p01[r]
            if s > best:
                best = s
                lab = 4
            s = (c - p01[r + 1]) * w2
            if s > best:
                best = s
                lab = 5
            s = (c - p02[r - 1]) * w3
            if s > best:
                best = s
                lab = 6
            s = (c - p02[r]) * w2
            if s > best:
                best = s
                lab = 7
            s = (c - p02[r + 1]) * w3
            if s > best:
                best = s
                lab = 8
            s = (c - p10[r - 1]) * w2
            if s > best:
                best = s
                lab = 9
            s = c - p10[r]
            if s > best:
                best = s
                lab = 10
            s = (c - p10[r + 1]) * w2
            if s > best:
                best = s
                lab = 11
            s = c - p11[r - 1]
            if s > best:
                best = s
                lab = 12
            s = c - p11[r + 1]
            if s > best:
                best = s
                lab = 14
            s = (c - p12[r - 1]) * w2
            if s > best:
                best = s
                lab = 15
            s = c - p12[r]
            if s > best:
                best = s
                lab = 16
            s = (c - p12[r + 1]) * w2
            if s > best:
                best = s
                lab = 17
            s = (c - p20[r - 1]) * w3
            if s > best:
                best = s
                lab = 18
            s = (c - p20[r]) * w2
            if s > best:
                best = s
                lab = 19
            s = (c - p20[r + 1]) * w3
            if s > best:
                best = s
                lab = 20
            s = (c - p21[r - 1]) * w2
            if s > best:
                best = s
                lab = 21
            s = c - p21[r]
            if s > best:
                best = s
                lab = 22
            s = (c - p21[r + 1]) * w2
            if s > best:
                best = s
                lab = 23
            s = (c - p22[r - 1]) * w3
            if s > best:
                best = s
                lab = 24
            s = (c - p22[r]) * w2
            if s > best:
                best = s
                lab = 25
            s = (c - p22[r + 1]) * w3
            if s > best:
                best = s
                lab = 26
            if best < 0:
                lab = 13
            orow[ok0 + r - 1] = lab
    return bad


@njit(cache=True)
def _fill(V, code, S, i, j0, k0, tj, tk):
    """Scratch ``S[p, q, r] = V[i - 1 + p, j0 - 1 + q, k0 - 1 + r]``, ``+inf`` outside ``V``."""
    n0, n1, n2 = V.shape
    inf = np.inf
    rlo = max(0, 1 - k0)
    rhi = min(tk + 2, n2 - k0 + 1)
    for p in range(3):
        ii = i - 1 + p
        for q in range(tj + 2):
            jj = j0 - 1 + q
            if ii < 0 or ii >= n0 or jj < 0 or jj >= n1:
                for r in range(tk + 2):
                    S[p, q, r] = inf
                continue
            for r in range(rlo):
                S[p, q, r] = inf
            for r in range(rhi, tk + 2):
                S[p, q, r] = inf
            if code == NATIVE:
                for r in range(rlo, rhi):
                    S[p, q, r] = V[ii, jj, k0 - 1 + r]
            else:
                for r in range(rlo, rhi):
                    S[p, q, r] = load_f64(V, (ii, jj, k0 - 1 + r), code)


@njit(parallel=True, cache=True)
def labels_kernel(V, code, proto, out, lo0, lo1, lo2, hi0, hi1, hi2, w2, w3):
    """Labels of ``V[lo0:hi0, lo1:hi1, lo2:hi2]`` into ``out`` (shape ``hi - lo``).

    Neighbours outside ``V`` are not candidates.  ``proto`` is an empty-tile array of the
    compute dtype, shape (3, TJ + 2, TK + 2).  Returns the number of non-finite values in
    the labelled region.
    """
    m1 = hi1 - lo1
    m2 = hi2 - lo2
    ntj = (m1 + TJ - 1) // TJ
    ntk = (m2 + TK - 1) // TK
    ntiles = (hi0 - lo0) * ntj * ntk
    bad = np.zeros(ntiles, np.int64)
    for t in prange(ntiles):
        a = t // (ntj * ntk)
        rest = t - a * (ntj * ntk)
        b = rest // ntk
        cc = rest - b * ntk
        i = lo0 + a
        j0 = lo1 + b * TJ
        k0 = lo2 + cc * TK
        tj = min(TJ, hi1 - j0)
        tk = min(TK, hi2 - k0)
        S = np.empty_like(proto)
        _fill(V, code, S, i, j0, k0, tj, tk)
        bad[t] = _tile_rows(S, out, a, j0 - lo1, k0 - lo2, tj, tk, w2, w3)
    return bad.sum()
