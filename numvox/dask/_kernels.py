"""Numba kernels of the Dask drivers (chunk-local basins, union-find merge, vote scatter).

They run inside Dask worker processes; ``cache=True`` makes every worker load the compiled
code from Numba's on-disk cache instead of compiling it again.
"""

import math

import numpy as np
from numba import njit

from numvox._shared.halfprec import load_f64
from numvox.votes._splat import linear_cell_cpu


# -- basins --------------------------------------------------------------------------------
@njit(cache=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@njit(cache=True)
def cut_leaving_edges(lab, o0, o1, o2, n1, n2):
    """Cut the edges that leave a block of labels (``border="inside"`` labels of a block whose
    first voxel is global ``(o0, o1, o2)`` in a volume with axes 1, 2 of length ``n1, n2``).

    Every voxel whose descent target lies outside the block gets label 13 (itself) in ``lab``,
    so that the whole-volume basin code computes the block's *chunk-local* basins.  Only the
    block's boundary layers are visited.  Returns ``(flat, target)`` int64: the block-local
    flat index of each such voxel and its target's global flat index.
    """
    c0, c1, c2 = lab.shape
    nmax = 2 * (c0 * c1 + c1 * c2 + c0 * c2)
    flat = np.empty(nmax, np.int64)
    tgt = np.empty(nmax, np.int64)
    e = 0
    for i in range(c0):
        for j in range(c1):
            inner = 0 < i < c0 - 1 and 0 < j < c1 - 1
            step = max(c2 - 1, 1) if inner else 1
            for k in range(0, c2, step):
                code = np.int64(lab[i, j, k])
                ti = i + code // 9 - 1
                tj = j + (code // 3) % 3 - 1
                tk = k + code % 3 - 1
                if ti < 0 or ti >= c0 or tj < 0 or tj >= c1 or tk < 0 or tk >= c2:
                    flat[e] = (i * c1 + j) * c2 + k
                    tgt[e] = ((o0 + ti) * n1 + (o1 + tj)) * n2 + (o2 + tk)
                    lab[i, j, k] = 13
                    e += 1
    return flat[:e].copy(), tgt[:e].copy()


@njit(cache=True)
def first_keys(ids, m, o0, o1, o2, n1, n2):
    """Global flat index of the first voxel of each of the ``m`` components of ``ids``
    (int32, numbered ``1..m`` in the C order of their first voxels)."""
    c0, c1, c2 = ids.shape
    keys = np.empty(m, np.int64)
    nxt = 1
    for i in range(c0):
        for j in range(c1):
            for k in range(c2):
                if ids[i, j, k] == nxt:
                    keys[nxt - 1] = ((o0 + i) * n1 + (o1 + j)) * n2 + (o2 + k)
                    nxt += 1
                    if nxt > m:
                        return keys
    return keys


@njit(cache=True)
def merge_components(keys, a, b):
    """Global basin ids of ``len(keys)`` chunk-local components joined by the pairs
    ``(a[i], b[i])``: ``1..M`` in the order of each basin's smallest key."""
    n = keys.shape[0]
    parent = np.arange(n)
    for i in range(a.shape[0]):
        x = _find(parent, a[i])
        y = _find(parent, b[i])
        if x == y:
            continue
        if keys[x] < keys[y] or (keys[x] == keys[y] and x < y):
            parent[y] = x
        else:
            parent[x] = y
    # every root now carries its basin's smallest key; number the roots by key
    nroots = 0
    for i in range(n):
        if parent[i] == i:
            nroots += 1
    rk = np.empty(nroots, np.int64)
    rn = np.empty(nroots, np.int64)
    r = 0
    for i in range(n):
        if parent[i] == i:
            rk[r] = keys[i]
            rn[r] = i
            r += 1
    order = np.argsort(rk)
    rank = np.empty(n, np.int64)
    for q in range(nroots):
        rank[rn[order[q]]] = q + 1
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = rank[_find(parent, i)]
    return out


@njit(cache=True)
def apply_lut(ids, lut, out):
    """``out = lut[ids - 1]`` for a block of int32 ids numbered from 1."""
    fi = ids.reshape(ids.size)
    fo = out.reshape(out.size)
    for i in range(fi.shape[0]):
        fo[i] = lut[fi[i] - 1]


# -- votes ---------------------------------------------------------------------------------
@njit(cache=True)
def _vote_pass(P, pcode, O, ocode, b0, x0, y0, z0, thr, L, landmark_major, linear, X, Y, Z,
               src_lo, src_hi, tgt_lo, tgt_hi, maxoff, keys, vals, dense, mode):
    """One pass over the votes of a block ``P`` (b, x, y, z, L+1) / ``O`` (b, x, y, z, 3L)
    whose first voxel is global ``(b0, x0, y0, z0)`` in an ``X x Y x Z`` volume.

    Exactly the arithmetic of ``numvox.votes`` (positions ``global index + offset`` in
    float64, range checks in float before any integer conversion, contributions rounded to
    float32 as the in-memory kernel adds them).  Sources are the block voxels in
    ``[src_lo, src_hi)`` (block coordinates, x y z); targets count only inside the global box
    ``[tgt_lo, tgt_hi)``.

    mode 0: count contributions; mode 1: write ``keys`` (global flat index over
    (B, L, X, Y, Z)) and ``vals``; mode 2: add into ``dense`` (b, L, tx, ty, tz) relative to
    ``tgt_lo``.  Returns ``(count, violations)``; a violation is a vote of a source that
    lands in the volume with an offset component larger than ``maxoff`` in magnitude.
    """
    nb = P.shape[0]
    fX, fY, fZ = np.float64(X), np.float64(Y), np.float64(Z)
    cnt = 0
    bad = 0
    for bb in range(nb):
        gb = b0 + bb
        for xx in range(src_lo[0], src_hi[0]):
            x = x0 + xx
            for yy in range(src_lo[1], src_hi[1]):
                y = y0 + yy
                for zz in range(src_lo[2], src_hi[2]):
                    z = z0 + zz
                    for l in range(L):
                        p = load_f64(P, (bb, xx, yy, zz, l + 1), pcode)
                        if not (p >= thr):
                            continue
                        if landmark_major:
                            ox = load_f64(O, (bb, xx, yy, zz, 3 * l), ocode)
                            oy = load_f64(O, (bb, xx, yy, zz, 3 * l + 1), ocode)
                            oz = load_f64(O, (bb, xx, yy, zz, 3 * l + 2), ocode)
                        else:
                            ox = load_f64(O, (bb, xx, yy, zz, l), ocode)
                            oy = load_f64(O, (bb, xx, yy, zz, L + l), ocode)
                            oz = load_f64(O, (bb, xx, yy, zz, 2 * L + l), ocode)
                        tx = x + ox
                        ty = y + oy
                        tz = z + oz
                        if not (tx > -1.0 and tx < fX and ty > -1.0 and ty < fY and tz > -1.0 and tz < fZ):
                            continue
                        if not (abs(ox) <= maxoff and abs(oy) <= maxoff and abs(oz) <= maxoff):
                            bad += 1
                            continue
                        if not linear:
                            ix = int(math.floor(tx + 0.5))
                            iy = int(math.floor(ty + 0.5))
                            iz = int(math.floor(tz + 0.5))
                            if ix < tgt_lo[0] or ix >= tgt_hi[0] or iy < tgt_lo[1] or iy >= tgt_hi[1]:
                                continue
                            if iz < tgt_lo[2] or iz >= tgt_hi[2]:
                                continue
                            v = np.float32(p)
                            if mode == 1:
                                keys[cnt] = (((gb * L + l) * X + ix) * Y + iy) * Z + iz
                                vals[cnt] = v
                            elif mode == 2:
                                dense[bb, l, ix - tgt_lo[0], iy - tgt_lo[1], iz - tgt_lo[2]] += v
                            cnt += 1
                        else:
                            ix0, iy0, iz0, wx1, wy1, wz1 = linear_cell_cpu(tx, ty, tz)
                            for dx in range(2):
                                ix = ix0 + dx
                                if ix < 0 or ix >= X or ix < tgt_lo[0] or ix >= tgt_hi[0]:
                                    continue
                                wx = wx1 if dx else 1.0 - wx1
                                for dy in range(2):
                                    iy = iy0 + dy
                                    if iy < 0 or iy >= Y or iy < tgt_lo[1] or iy >= tgt_hi[1]:
                                        continue
                                    wxy = wx * (wy1 if dy else 1.0 - wy1)
                                    for dz in range(2):
                                        iz = iz0 + dz
                                        if iz < 0 or iz >= Z or iz < tgt_lo[2] or iz >= tgt_hi[2]:
                                            continue
                                        w = wxy * (wz1 if dz else 1.0 - wz1)
                                        v = np.float32(p * w)
                                        if mode == 1:
                                            keys[cnt] = (((gb * L + l) * X + ix) * Y + iy) * Z + iz
                                            vals[cnt] = v
                                        elif mode == 2:
                                            dense[bb, l, ix - tgt_lo[0], iy - tgt_lo[1], iz - tgt_lo[2]] += v
                                        cnt += 1
    return cnt, bad


def scatter_sparse(P, pcode, O, ocode, origin, thr, L, landmark_major, linear, shape):
    """All contributions of a block's votes: ``(keys int64, vals float64)`` (see _vote_pass)."""
    b0, x0, y0, z0 = (np.int64(v) for v in origin)
    X, Y, Z = (np.int64(v) for v in shape)
    src_lo = np.zeros(3, np.int64)
    src_hi = np.array(P.shape[1:4], np.int64)
    tgt_lo = np.zeros(3, np.int64)
    tgt_hi = np.array([X, Y, Z], np.int64)
    dummy_k = np.empty(0, np.int64)
    dummy_v = np.empty(0, np.float64)
    dummy_d = np.empty((0, 0, 0, 0, 0), np.float64)
    args = (P, np.int64(pcode), O, np.int64(ocode), b0, x0, y0, z0, np.float64(thr), np.int64(L),
            bool(landmark_major), bool(linear), X, Y, Z, src_lo, src_hi, tgt_lo, tgt_hi, np.inf)
    n, _ = _vote_pass(*args, dummy_k, dummy_v, dummy_d, np.int64(0))
    keys = np.empty(n, np.int64)
    vals = np.empty(n, np.float64)
    _vote_pass(*args, keys, vals, dummy_d, np.int64(1))
    return keys, vals


def scatter_dense(P, pcode, O, ocode, origin, core_lo, core_hi, thr, L, landmark_major, linear,
                  shape, maxoff):
    """Heatmaps (b, L, core) in float64 of the votes of a haloed block that land in the core
    box ``[core_lo, core_hi)`` (global x y z); returns ``(dense, violations)`` where the
    violations are votes of core sources whose offsets exceed ``maxoff``."""
    b0, x0, y0, z0 = (np.int64(v) for v in origin)
    X, Y, Z = (np.int64(v) for v in shape)
    core_lo = np.asarray(core_lo, np.int64)
    core_hi = np.asarray(core_hi, np.int64)
    dense = np.zeros((P.shape[0], L, *(core_hi - core_lo)), np.float64)
    dummy_k = np.empty(0, np.int64)
    dummy_v = np.empty(0, np.float64)
    all_lo = np.zeros(3, np.int64)
    all_hi = np.array(P.shape[1:4], np.int64)
    origin3 = np.array([x0, y0, z0], np.int64)
    common = (P, np.int64(pcode), O, np.int64(ocode), b0, x0, y0, z0, np.float64(thr), np.int64(L),
              bool(landmark_major), bool(linear), X, Y, Z)
    # every voxel of the haloed block votes into the core (offsets unchecked here) ...
    _vote_pass(*common, all_lo, all_hi, core_lo, core_hi, np.inf, dummy_k, dummy_v, dense, np.int64(2))
    # ... and the core's own voxels are checked against the halo's reach
    _, bad = _vote_pass(*common, core_lo - origin3, core_hi - origin3, core_lo, core_lo,
                        np.float64(maxoff), dummy_k, dummy_v, dense, np.int64(0))
    return dense, bad
