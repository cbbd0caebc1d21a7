"""CPU kernels for steepest-descent labels and descent basins.

Labels
------
The volume is cut into tiles of ``TI x TJ x TK`` output voxels.  Each tile slides a ring of
three scratch planes of ``(TJ + 2) x (TK + 2)`` values in the *compute dtype* (float32 or float64, see
``_api.compute_dtype``) through its planes, each input plane copied in once (decoding half precision on the fly); voxels
outside the block's array are filled with ``+inf`` so that their score ``c - inf = -inf`` can
never be chosen and the in-volume-only (``border="inside"``) rule needs no special case at
the faces.  The 26 compares per voxel then run as one branch-free loop over the last axis
(``_tile_rows``), which LLVM vectorises: the 26 scores are reduced by a balanced tree of
selects (short dependency chains), each combining a lower-code group ``a`` with the next
higher-code group ``b`` as ``b if s_b > s_a else a``, so the smallest code wins ties (NumPy
``argmax``).  Non-finite inputs are counted while the scratch planes are filled.
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

TI = 16  # output planes per tile (a ring of 3 scratch planes slides through them)
TJ = 32  # output rows per tile
TK = 256  # output columns per tile


@njit(cache=True)
def _tile_rows(S, z0, z1, z2, out, oi, oj0, ok0, tj, tk, w2, w3, ninf):
    """Labels of one plane of a tile from the scratch ring ``S`` (3, tj + 2, tk + 2), whose
    slots ``z0, z1, z2`` hold the planes before, at and after the output plane.

    Writes ``out[oi, oj0 + q, ok0 + r]`` for ``q < tj``, ``r < tk``.  ``w2``, ``w3`` and ``ninf`` (-inf) are scalars of the
    compute dtype, so the whole loop stays in it.
    """
    for q in range(1, tj + 1):
        p00 = S[z0, q - 1]
        p01 = S[z0, q]
        p02 = S[z0, q + 1]
        p10 = S[z1, q - 1]
        p11 = S[z1, q]
        p12 = S[z1, q + 1]
        p20 = S[z2, q - 1]
        p21 = S[z2, q]
        p22 = S[z2, q + 1]
        orow = out[oi, oj0 + q - 1, ok0:ok0 + tk]
        for r in range(1, tk + 1):
            c = p11[r]
            s0 = (c - p00[r - 1]) * w3
            s1 = (c - p00[r]) * w2
            m = s1 > s0
            b1 = s1 if m else s0
            k1 = 1 if m else 0
            s2 = (c - p00[r + 1]) * w3
            s3 = (c - p01[r - 1]) * w2
            m = s3 > s2
            b2 = s3 if m else s2
            k2 = 3 if m else 2
            m = b2 > b1
            b3 = b2 if m else b1
            k3 = k2 if m else k1
            s4 = c - p01[r]
            s5 = (c - p01[r + 1]) * w2
            m = s5 > s4
            b4 = s5 if m else s4
            k4 = 5 if m else 4
            s6 = (c - p02[r - 1]) * w3
            s7 = (c - p02[r]) * w2
            m = s7 > s6
            b5 = s7 if m else s6
            k5 = 7 if m else 6
            m = b5 > b4
            b6 = b5 if m else b4
            k6 = k5 if m else k4
            m = b6 > b3
            b7 = b6 if m else b3
            k7 = k6 if m else k3
            s8 = (c - p02[r + 1]) * w3
            s9 = (c - p10[r - 1]) * w2
            m = s9 > s8
            b8 = s9 if m else s8
            k8 = 9 if m else 8
            s10 = c - p10[r]
            s11 = (c - p10[r + 1]) * w2
            m = s11 > s10
            b9 = s11 if m else s10
            k9 = 11 if m else 10
            m = b9 > b8
            b10 = b9 if m else b8
            k10 = k9 if m else k8
            s12 = c - p11[r - 1]
            s14 = c - p11[r + 1]
            m = s14 > s12
            b11 = s14 if m else s12
            k11 = 14 if m else 12
            s15 = (c - p12[r - 1]) * w2
            s16 = c - p12[r]
            m = s16 > s15
            b12 = s16 if m else s15
            k12 = 16 if m else 15
            m = b12 > b11
            b13 = b12 if m else b11
            k13 = k12 if m else k11
            m = b13 > b10
            b14 = b13 if m else b10
            k14 = k13 if m else k10
            m = b14 > b7
            b15 = b14 if m else b7
            k15 = k14 if m else k7
            s17 = (c - p12[r + 1]) * w2
            s18 = (c - p20[r - 1]) * w3
            m = s18 > s17
            b16 = s18 if m else s17
            k16 = 18 if m else 17
            s19 = (c - p20[r]) * w2
            s20 = (c - p20[r + 1]) * w3
            m = s20 > s19
            b17 = s20 if m else s19
            k17 = 20 if m else 19
            m = b17 > b16
            b18 = b17 if m else b16
            k18 = k17 if m else k16
            s21 = (c - p21[r - 1]) * w2
            s22 = c - p21[r]
            m = s22 > s21
            b19 = s22 if m else s21
            k19 = 22 if m else 21
            s23 = (c - p21[r + 1]) * w2
            s24 = (c - p22[r - 1]) * w3
            m = s24 > s23
            b20 = s24 if m else s23
            k20 = 24 if m else 23
            m = b20 > b19
            b21 = b20 if m else b19
            k21 = k20 if m else k19
            m = b21 > b18
            b22 = b21 if m else b18
            k22 = k21 if m else k18
            s25 = (c - p22[r]) * w2
            s26 = (c - p22[r + 1]) * w3
            m = s26 > s25
            b23 = s26 if m else s25
            k23 = 26 if m else 25
            m = b23 > b22
            b24 = b23 if m else b22
            k24 = k23 if m else k22
            m = b24 > b15
            b25 = b24 if m else b15
            k25 = k24 if m else k15
            best = b25
            lab = k25
            if best < 0:
                lab = 13
            orow[r - 1] = lab


@njit(cache=True)
def _fill(V, code, S, slot, ii, j0, k0, tj, tk, owned):
    """Scratch plane ``S[slot, q, r] = V[ii, j0 - 1 + q, k0 - 1 + r]``, ``+inf`` outside ``V``.

    Call it with a literal ``code`` of 0 for native dtypes: Numba then compiles the plain
    copy loop alone, which LLVM vectorises.  When ``owned`` (the plane is one of the tile's
    output planes), returns the number of non-finite values among the tile's own voxels of
    this plane (each input voxel is counted by exactly one tile), else 0.
    """
    bad = 0
    n0, n1, n2 = V.shape
    inf = np.inf
    rlo = max(0, 1 - k0)
    rhi = min(tk + 2, n2 - k0 + 1)
    for q in range(tj + 2):
        jj = j0 - 1 + q
        if ii < 0 or ii >= n0 or jj < 0 or jj >= n1:
            for r in range(tk + 2):
                S[slot, q, r] = inf
            continue
        for r in range(rlo):
            S[slot, q, r] = inf
        for r in range(rhi, tk + 2):
            S[slot, q, r] = inf
        # slices, so that every index below is provably >= 0 (no wraparound checks)
        src = V[ii, jj, k0 - 1 + rlo:k0 - 1 + rhi]
        dst = S[slot, q, rlo:rhi]
        if code == NATIVE:
            _copy_row(src, dst)
        else:
            _decode_row(src, code, dst)
        if owned and q >= 1 and q <= tj:
            bad += _count_nonfinite(S[slot, q, 1:tk + 1])
    return bad


@njit(cache=True)
def _count_nonfinite(row):
    n = 0
    for r in range(row.shape[0]):
        x = row[r]
        n += (x - x) != 0  # NaN and +-inf give NaN
    return n


@njit(cache=True)
def _copy_row(src, dst):
    for r in range(dst.shape[0]):
        dst[r] = src[r]


@njit(cache=True)
def _decode_row(src, code, dst):
    for r in range(dst.shape[0]):
        dst[r] = load_f64(src, r, code)


@njit(parallel=True, cache=True)
def labels_kernel(V, code, proto, out, lo0, lo1, lo2, hi0, hi1, hi2, w2, w3, ninf):
    """Labels of ``V[lo0:hi0, lo1:hi1, lo2:hi2]`` into ``out`` (shape ``hi - lo``).

    Neighbours outside ``V`` are not candidates.  ``proto`` is an empty-tile array of the
    compute dtype, shape (3, TJ + 2, TK + 2).  Returns the number of non-finite values in
    the labelled region.
    """
    m0 = hi0 - lo0
    m1 = hi1 - lo1
    m2 = hi2 - lo2
    nti = (m0 + TI - 1) // TI
    ntj = (m1 + TJ - 1) // TJ
    ntk = (m2 + TK - 1) // TK
    ntiles = nti * ntj * ntk
    bad = np.zeros(ntiles, np.int64)
    for t in prange(ntiles):
        a = t // (ntj * ntk)
        rest = t - a * (ntj * ntk)
        b = rest // ntk
        cc = rest - b * ntk
        i0 = lo0 + a * TI
        j0 = lo1 + b * TJ
        k0 = lo2 + cc * TK
        ti = min(TI, hi0 - i0)
        tj = min(TJ, hi1 - j0)
        tk = min(TK, hi2 - k0)
        S = np.empty_like(proto)
        nbad = 0
        for step in range(ti + 2):  # a ring of 3 planes: each plane filled once
            ii = i0 - 1 + step
            owned = step >= 1 and step <= ti
            if code == NATIVE:
                nbad += _fill(V, 0, S, step % 3, ii, j0, k0, tj, tk, owned)
            else:
                nbad += _fill(V, code, S, step % 3, ii, j0, k0, tj, tk, owned)
            if step >= 2:
                _tile_rows(S, (step - 2) % 3, (step - 1) % 3, step % 3, out,
                                   ii - 1 - lo0, j0 - lo1, k0 - lo2, tj, tk, w2, w3, ninf)
        bad[t] = nbad
    return bad.sum()


# --------------------------------------------------------------------------------------
# Basins: labels -> targets -> components
# --------------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _find(P, x):
    """Root of ``x`` with path halving (only for entries no other thread touches)."""
    while P[x] != x:
        P[x] = P[P[x]]
        x = P[x]
    return x


@njit(inline="always", cache=True)
def _union(P, a, b):
    """Unite the sets of ``a`` and ``b``; the smaller root index becomes the root."""
    ra = _find(P, a)
    rb = _find(P, b)
    if ra < rb:
        P[rb] = ra
    elif rb < ra:
        P[ra] = rb


@njit(cache=True)
def target_offsets(n1, n2):
    """Flat index offset of each neighbour code in a C-ordered ``(n0, n1, n2)`` volume."""
    off = np.zeros(27, np.int64)
    for k in range(27):
        off[k] = (k // 9 - 1) * n1 * n2 + ((k // 3) % 3 - 1) * n2 + (k % 3 - 1)
    return off


@njit(parallel=True, cache=True)
def unite_within_slabs(L, P, off, bounds):
    """Phase 1: ``P[v] = v`` and unite every edge ``v -> v + off[L[v]]`` whose both ends lie
    in the same slab ``[bounds[s], bounds[s + 1])``.  Slabs run in parallel; a slab's
    union-find touches only its own entries, so there are no races."""
    nslab = bounds.shape[0] - 1
    for s in prange(nslab):
        lo = bounds[s]
        hi = bounds[s + 1]
        for v in range(lo, hi):
            P[v] = v
        for v in range(lo, hi):
            k = L[v]
            if k != 13 and k < 27:  # codes >= 27 cannot come from descent_labels: ignored
                t = v + off[k]
                if t >= lo and t < hi:
                    _union(P, v, t)


@njit(cache=True)
def unite_across_slabs(L, P, off, bounds, plane):
    """Phase 2 (serial): the edges that leave their slab start in a slab's first or last
    plane (``plane`` voxels each); unite them."""
    nslab = bounds.shape[0] - 1
    for s in range(nslab):
        lo = bounds[s]
        hi = bounds[s + 1]
        for part in range(2):
            a = lo if part == 0 else max(lo + plane, hi - plane)
            b = min(hi, lo + plane) if part == 0 else hi
            for v in range(a, b):
                k = L[v]
                if k != 13 and k < 27:
                    t = v + off[k]
                    if (t < lo or t >= hi) and t >= 0 and t < P.shape[0]:
                        _union(P, v, t)


@njit(parallel=True, cache=True)
def compress_and_number(P, plane):
    """Phases 3-4: every entry becomes its root (parallel; a thread only ever writes a node's
    root, which concurrent readers accept as an ancestor), then roots (the smallest flat
    index of their component) are numbered 1..M in C order, and every voxel takes its
    root's number.  Returns M."""
    n = P.shape[0]
    nplanes = (n + plane - 1) // plane
    for p in prange(nplanes):
        for v in range(p * plane, min(n, (p + 1) * plane)):
            r = P[v]
            while P[r] != r:
                r = P[r]
            P[v] = r
    counts = np.zeros(nplanes + 1, np.int64)
    for p in prange(nplanes):
        c = 0
        for v in range(p * plane, min(n, (p + 1) * plane)):
            c += P[v] == v
        counts[p + 1] = c
    for p in range(nplanes):
        counts[p + 1] += counts[p]
    for p in prange(nplanes):  # roots get -id (entries of other planes are not read here)
        c = counts[p]
        for v in range(p * plane, min(n, (p + 1) * plane)):
            if P[v] == v:
                c += 1
                P[v] = -c
    for p in prange(nplanes):  # non-roots read their root's (negative, unchanging) entry
        for v in range(p * plane, min(n, (p + 1) * plane)):
            r = P[v]
            if r >= 0:
                P[v] = -P[r]
    for p in prange(nplanes):
        for v in range(p * plane, min(n, (p + 1) * plane)):
            if P[v] < 0:
                P[v] = -P[v]
    return counts[nplanes]
