"""CPU kernels for steepest-descent labels and descent basins.

Labels
------
The label of a voxel is the smallest neighbour code ``k`` that maximises
``s_k = (c - n_k) * w_k``, where ``w = 1, 1/sqrt(2), 1/sqrt(3)`` for the 6 face, 12 edge
and 8 corner neighbours.  Within one distance class ``w`` is shared and rounding is
monotone, so the class's best neighbour is the one with the smallest *value* (smallest
code among equal values), and its score is then computed exactly as a direct 26-way
comparison would compute it.  The three class minima separate along the axes, which lets
neighbouring voxels share most of the work: with ``(da, db, dc)`` the offsets along axes
0, 1, 2 and codes ``9 (da+1) + 3 (db+1) + (dc+1)`` (C order),

* per plane and voxel: ``H = min(v[dc=-1], v[dc=+1])`` (row neighbours), ``G = min(H[db=-1],
  H[db=+1])`` (the 4 in-plane diagonals) and ``Q = min(v[db=-1], H, v[db=+1])`` (the 4
  in-plane face neighbours), each with the in-plane code ``3 (db+1) + (dc+1)`` of its
  minimum;
* per voxel, from the planes before (``-``), at (``0``) and after (``+``) it: corners
  ``min(G-, G+)``, edges ``min(Q-, G0, Q+)``, faces ``min(v-, Q0, v+)``.

Every ``min`` lists its candidates in ascending code order and takes a later one only when
it is strictly smaller, so exact ties go to the smallest code for free; only the final
choice between the three classes compares codes.  That is 9 compare-selects per voxel
instead of 26 (plus three subtractions and two multiplications), all branch-free loops
over the last axis that LLVM vectorises; codes are carried as floats of the compute dtype,
so that every select runs on lanes of one width.

The volume is cut into tiles of ``TI x TJ x TK`` output voxels, and each thread takes a
contiguous run of tiles with its scratch allocated once.  A tile slides through its planes:
each input plane is copied once into a ring of three scratch planes of ``(TJ + 2)`` rows of
``TK + 2`` values (row pitch ``P``) in the *compute dtype* (float32 or float64, see
``_rules.compute_dtype``; half precision decoded on the fly), with ``+inf`` outside the
array, so that out-of-volume neighbours (score ``-inf``) are never chosen and the
in-volume-only (``border="inside"``) rule needs no special case.  Every later stage is one
flat loop over a whole plane (index ``f = q P + r``; the columns past ``TK`` are computed
and ignored), so that loop set-up and LLVM's runtime alias checks are paid once per plane,
not per row: the row minima ``H`` of the new plane, then one fused pass that computes the
new plane's ``G`` and ``Q`` (stored into a ring of three) and, from them still in
registers and the stored ``G``, ``Q`` of the two planes before, the labels of the middle
plane into a flat uint8 plane, which is then copied into its output rows.  While a plane is
computed, the next input plane is prefetched (it comes from memory, not cache).
Non-finite values are detected (not counted: the host counts them in the error path)
while the scratch planes are filled.  The scratch parts share one buffer per thread, each
starting at a chosen offset modulo 4 KiB, so that no stream a flat loop stores to seems
(to the CPU) to alias a stream it loads from.  Extra memory: one ~0.36 MiB (float32;
float64: ~0.65 MiB) scratch buffer per running thread.

Exactness at the edges of the number range (see ``_rules``): int64/uint64 values go into
the scratch planes as ``float64(v - base)``, ``base`` the tile's first voxel and ``v - base``
taken in wrapping 64-bit arithmetic, exact within 2**52 of it (:func:`_key`; the fill flags
a tile whose values reach further).  The finiteness test of a tile's own voxels also flags
floats within a factor 2**26 (float32) / 2**55 (float64) of the dtype's maximum, the only
values whose differences can overflow (:func:`_any_suspect`).  Flagged tiles are redone
voxel by voxel by :func:`direct_tiles` (same rule; exact integer differences, and halved
differences where a float one overflowed), so the fast loops carry no extra work beyond
one multiply in that test (and, for 64-bit integers, the range check of the keys).

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
uint8 labels.  The same ``_find`` / ``_union`` merge the chunk-local components of the Dask
driver (:func:`merge_components`).

Host drivers
------------
:func:`run_labels_cpu`, :func:`labels_block_cpu` (one haloed block of a larger volume),
:func:`basins_from_labels_cpu` and :func:`chunk_basins_cpu` (chunk-local basins plus the edges
that leave the chunk) wrap the kernels for NumPy arrays; the in-memory and Dask paths both run
through them.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from numvox._shared.halfprec import NATIVE, kernel_view, load_f64
from numvox._shared.validate import check_choice

from ._rules import BORDERS, W2, W3, as_float, check_basin_voxels, check_volume, compute_dtype, nonfinite_error

TI = 64  # output planes per tile
TJ = 16  # output rows per tile
TK = 256  # output columns per tile
P = TK + 8  # row pitch of every scratch plane (flat loops run over whole planes)
# 64-byte line (modulo 4 KiB) on which each scratch part starts, float32 and float64 (see _scratch)
_PARTS = (23, 58, 22, 40, 40, 48, 20, 29, 1, 18, 28, 3, 17, 32, 47, 19, 29)
_PARTS64 = (46, 49, 45, 17, 18, 59, 38, 29, 0, 41, 29, 4, 41, 30, 6, 38, 29)

# neighbour codes as floats (promoted to the compute dtype where they meet its values)
_C0, _C1, _C2, _C3 = np.float32(0), np.float32(1), np.float32(2), np.float32(3)
_C4, _C6, _C7, _C9 = np.float32(4), np.float32(6), np.float32(7), np.float32(9)
_C13, _C18, _C22, _C45 = np.float32(13), np.float32(18), np.float32(22), np.float32(45)


@njit(inline="always", cache=True)
def _later_if_less(v, k, x, kx):
    """One step of an ordered minimum: the candidate ``(x, kx)``, listed after ``(v, k)``
    in code order, replaces it only when strictly smaller (ties keep the smaller code)."""
    m = x < v
    return (x if m else v), (kx if m else k)


@njit(cache=True)
def _h_plane(S, H, Hc, n):
    """``H[f] = min(S[f], S[f + 2])`` over a flattened scratch plane (the row neighbours of
    scratch column ``r + 1``) and ``Hc[f]`` its ``dc + 1`` (0 or 2; the left one on ties)."""
    for f in range(n):
        H[f], Hc[f] = _later_if_less(S[f], _C0, S[f + 2], _C2)


@njit(inline="always", cache=True)
def _gq(S, H, Hc, f):
    """``(G, Gc, Q, Qc)`` of output voxel ``f`` (flat, pitch ``P``) of a plane: the in-plane
    diagonals (rows above, codes 0, 2, then below, 6, 8) and faces (up 1, left / right 3, 5,
    down 7), each the smallest value and its in-plane code."""
    g, gc = _later_if_less(H[f], Hc[f], H[f + 2 * P], Hc[f + 2 * P] + _C6)
    q, qc = _later_if_less(S[f + 1], _C1, H[f + P], Hc[f + P] + _C3)
    q, qc = _later_if_less(q, qc, S[f + 2 * P + 1], _C7)
    return g, gc, q, qc


@njit(cache=True)
def _gq_plane(S, H, Hc, G, Gc, Q, Qc, n):
    """``G``, ``Q`` (values and in-plane codes) of the first ``n`` flat voxels of a plane."""
    for f in range(n):
        G[f], Gc[f], Q[f], Qc[f] = _gq(S, H, Hc, f)


@njit(inline="always", cache=True)
def _choose(sf, kf, se, ke, sc, kc, zero):
    """The label from the three class scores and the best of them: the best class, ties
    between classes to the smallest code, 13 when it is below ``zero`` (the centre's own
    score)."""
    best = max(max(sf, se), sc)
    k = _C45
    k = min(k, kf) if sf == best else k
    k = min(k, ke) if se == best else k
    k = min(k, kc) if sc == best else k
    return np.uint8(k if best >= zero else _C13), best


@njit(cache=True)
def _gq_out_plane(S0, S1, S2, H, Hc, G0, Gc0, Q0, Qc0, G1, Gc1, Q1, Qc1, G2, Gc2, Q2, Qc2, O, n, w2, w3):
    """One pass over the first ``n`` flat voxels (pitch ``P``) of a tile plane: ``G``, ``Q`` of
    the plane after the output plane (from its scratch ``S2`` and row minima ``H``) into
    ``G2 .. Qc2``, and, with those still in registers and the ``G``, ``Q`` of the planes
    before (``*0``) and at (``*1``) it, the labels of the output plane into ``O``."""
    zero = w2 - w2
    for f in range(n):
        g2, gc2, q2, qc2 = _gq(S2, H, Hc, f)
        G2[f], Gc2[f], Q2[f], Qc2[f] = g2, gc2, q2, qc2
        c = S1[f + P + 1]
        # corners: G- (codes 0..8), G+ (18..26)
        vc, kc = _later_if_less(G0[f], Gc0[f], g2, gc2 + _C18)
        # edges: Q- (1..7), G0 (9..17), Q+ (19..25)
        ve, ke = _later_if_less(Q0[f], Qc0[f], G1[f], Gc1[f] + _C9)
        ve, ke = _later_if_less(ve, ke, q2, qc2 + _C18)
        # faces: v- (4), Q0 (10..16), v+ (22)
        vf, kf = _later_if_less(S0[f + P + 1], _C4, Q1[f], Qc1[f] + _C9)
        vf, kf = _later_if_less(vf, kf, S2[f + P + 1], _C22)
        O[f] = _choose(c - vf, kf, (c - ve) * w2, ke, (c - vc) * w3, kc, zero)[0]
@njit(cache=True)
def _fill(V, code, S, ii, j0, k0, tj, tk, owned, base, huge):
    """Scratch plane ``S[q, r] = V[ii, j0 - 1 + q, k0 - 1 + r]``, ``+inf`` outside ``V``
    (64-bit integers: ``V[...] - base``, see :func:`_key`).

    Call it with a literal ``code`` of 0 for native dtypes: Numba then compiles the plain
    copy loop alone, which LLVM vectorises.  Returns a bit set: 1 when ``owned`` (the plane
    is one of the tile's output planes) and any of the tile's own voxels of this plane (each
    input voxel belongs to exactly one tile) is NaN, infinite or so large that a difference
    may overflow (see :func:`_any_suspect`); 2 when a 64-bit integer of the plane is 2**52
    or more away from ``base`` (its key would not be exact).
    """
    bad = False
    far = False
    n0, n1, n2 = V.shape
    inf = np.inf
    rlo = max(0, 1 - k0)
    rhi = min(tk + 2, n2 - k0 + 1)
    for q in range(tj + 2):
        jj = j0 - 1 + q
        if ii < 0 or ii >= n0 or jj < 0 or jj >= n1:
            for r in range(tk + 2):
                S[q, r] = inf
            continue
        for r in range(rlo):
            S[q, r] = inf
        for r in range(rhi, tk + 2):
            S[q, r] = inf
        # slices, so that every index below is provably >= 0 (no wraparound checks)
        src = V[ii, jj, k0 - 1 + rlo:k0 - 1 + rhi]
        dst = S[q, rlo:rhi]
        if code == NATIVE:
            far = far | _copy_row(src, dst, base)
        else:
            _decode_row(src, code, dst)
        if owned and q >= 1 and q <= tj:
            bad = bad | _any_suspect(S[q, 1:tk + 1], huge)
    return (1 if bad else 0) | (2 if far else 0)


@intrinsic
def _prefetch(typingctx, row, offset):
    """Hint the CPU to fetch the cache line ``offset`` bytes into ``row``'s data (never
    faults; no effect on results)."""

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        i8, i32 = ir.IntType(8), ir.IntType(32)
        ptr = builder.gep(builder.bitcast(data, i8.as_pointer()), [args[1]])
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [ptr.type], fnty)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return types.void(row, offset), codegen


@njit(cache=True)
def _prefetch_plane(V, ii, j0, k0, tj, tk):
    """Start fetching the input voxels that :func:`_fill` will copy for plane ``ii``, so
    that they arrive from memory while the current plane is computed."""
    n0, n1, n2 = V.shape
    if ii < 0 or ii >= n0:
        return
    lo = max(0, k0 - 1)
    hi = min(n2, k0 + tk + 1)
    for jj in range(max(0, j0 - 1), min(n1, j0 + tj + 1)):
        row = V[ii, jj, lo:hi]
        nbytes = (hi - lo) * row.strides[0]
        for b in range(0, nbytes, 64):
            _prefetch(row, b)
        _prefetch(row, nbytes - 1)


@njit(cache=True)
def _any_suspect(row, huge):
    """Whether a value of ``row`` is NaN, infinite, or ``|x| * huge`` overflows.

    A difference ``c - n`` of two finite values can only overflow when both ``|c|`` and
    ``|n|`` are at least half an ulp of the dtype's maximum (2**103 for float32, 2**970
    for float64); ``huge`` (2**26, 2**55 in the compute dtype) makes every such value
    overflow, so a tile whose own voxels pass has no overflowing score (every score's
    centre is one of them).  One multiply more than a plain finiteness test."""
    bad = False
    for r in range(row.shape[0]):
        x = row[r] * huge
        bad = bad | ((x - x) != 0)  # NaN and +-inf give NaN
    return bad


def _key(x, base):
    """``(scratch value, far)`` of an input value: the value itself (``far`` False) for every
    dtype but 64-bit integers; those become ``float64(x - base)``, the difference taken in
    wrapping 64-bit arithmetic (exact whenever ``|x - base| < 2**63``), and ``far`` says
    ``|x - base| >= 2**52`` (the key then may not be exact, or the difference wrapped).
    Chosen by type at compile time (:func:`_key_impl`)."""
    raise NotImplementedError  # pragma: no cover - only called from compiled code


@overload(_key, inline="always")
def _key_impl(x, base):
    if isinstance(x, types.Integer) and x.bitwidth == 64:

        def relative(x, base):
            u = np.uint64(x) - np.uint64(base) + np.uint64(2**52)  # wraps
            return np.float64(np.int64(u - np.uint64(2**52))), u >= np.uint64(2**53)

        return relative

    def plain(x, base):
        return x, False

    return plain


@njit(cache=True)
def _copy_row(src, dst, base):
    far = False
    for r in range(dst.shape[0]):
        x, f = _key(src[r], base)
        dst[r] = x
        far = far | f
    return far


@njit(cache=True)
def _decode_row(src, code, dst):
    for r in range(dst.shape[0]):
        dst[r] = load_f64(src, r, code)


def _value(V, i, j, k, code, proto):
    """``V[i, j, k]`` as the kernels compare it: 64-bit integers as they are, every other
    dtype converted to ``proto``'s (the compute) dtype exactly as the scratch planes hold it
    (half precision decoded).  Chosen by type at compile time."""
    raise NotImplementedError  # pragma: no cover - only called from compiled code


@overload(_value, inline="always")
def _value_impl(V, i, j, k, code, proto):
    if isinstance(V.dtype, types.Integer) and V.dtype.bitwidth == 64:
        return lambda V, i, j, k, code, proto: V[i, j, k]
    if proto.dtype == types.float32:
        return lambda V, i, j, k, code, proto: np.float32(load_f64(V, (i, j, k), code))
    return lambda V, i, j, k, code, proto: np.float64(load_f64(V, (i, j, k), code))


def _diff(c, m):
    """``c - m``: for floats in their dtype; for 64-bit integers exact and then rounded once
    to float64 (the magnitude is taken in unsigned 64-bit arithmetic: no wrapping at any
    range).  Chosen by type at compile time."""
    raise NotImplementedError  # pragma: no cover - only called from compiled code


@overload(_diff, inline="always")
def _diff_impl(c, m):
    if isinstance(c, types.Integer):

        def exact(c, m):
            if c >= m:
                return np.float64(np.uint64(c) - np.uint64(m))
            return -np.float64(np.uint64(m) - np.uint64(c))

        return exact
    return lambda c, m: c - m


@njit(parallel=True, cache=True)
def direct_tiles(V, code, proto, out, lo0, lo1, lo2, hi0, hi1, hi2, tiles, w2, w3, half):
    """Redo the tiles numbered ``tiles`` (as :func:`labels_kernel` numbers them) straight
    from ``V``, one voxel at a time, in parallel over the tiles.

    The rule is :func:`_gq_out_plane`'s: per distance class the smallest neighbour value (the
    smallest code among equal values), the class scores ``(c - m) * w``, the best class,
    ties to the smallest code, 13 when all are negative.  Two cases need it:

    * 64-bit integers whose tile spans 2**52 or more (where the scratch keys of
      :func:`_key` would not be exact): ``c - m`` is taken exactly and rounded once
      (:func:`_diff`).
    * floats with an infinite score (``c - m`` overflowed, ``|c|`` is then at least half an
      ulp of the dtype's maximum: 2**103 for float32, 2**970 for float64): such a voxel is
      rescored with both sides halved, ``(c * 0.5 - m * 0.5) * w``.  Halving is exact for
      every value that can affect its differences (a subnormal neighbour's rounding is far
      below half an ulp of ``c``), so its finite scores become exactly half of what they
      were, the overflowed ones finite, and no false tie between infinite scores of
      different distance classes remains.  Every other voxel gets the label it had.
    """
    n0, n1, n2 = V.shape
    ntj = (hi1 - lo1 + TJ - 1) // TJ
    ntk = (hi2 - lo2 + TK - 1) // TK
    for tt in prange(tiles.shape[0]):
        t = tiles[tt]
        a = t // (ntj * ntk)
        rest = t - a * (ntj * ntk)
        i0 = lo0 + a * TI
        j0 = lo1 + (rest // ntk) * TJ
        k0 = lo2 + (rest % ntk) * TK
        for i in range(i0, min(i0 + TI, hi0)):
            for j in range(j0, min(j0 + TJ, hi1)):
                for k in range(k0, min(k0 + TK, hi2)):
                    c = _value(V, i, j, k, code, proto)
                    vf, ve, vc = c, c, c
                    kf, ke, kc = -1, -1, -1
                    for kk in range(27):
                        da = kk // 9 - 1
                        db = (kk // 3) % 3 - 1
                        dc = kk % 3 - 1
                        x0 = i + da
                        x1 = j + db
                        x2 = k + dc
                        if kk == 13 or x0 < 0 or x0 >= n0 or x1 < 0 or x1 >= n1 or x2 < 0 or x2 >= n2:
                            continue
                        x = _value(V, x0, x1, x2, code, proto)
                        nz = (da != 0) + (db != 0) + (dc != 0)
                        if nz == 1:
                            if kf < 0 or x < vf:
                                vf, kf = x, kk
                        elif nz == 2:
                            if ke < 0 or x < ve:
                                ve, ke = x, kk
                        elif kc < 0 or x < vc:
                            vc, kc = x, kk
                    ninf = -np.inf
                    zero = _diff(c, c)
                    sf = _diff(c, vf) if kf >= 0 else ninf
                    se = _diff(c, ve) * w2 if ke >= 0 else ninf
                    sc = _diff(c, vc) * w3 if kc >= 0 else ninf
                    lab, best = _choose(sf, np.float64(kf), se, np.float64(ke), sc, np.float64(kc), zero)
                    if best == np.inf:  # floats only: an overflowed difference
                        ch = c * half
                        sf = _diff(ch, vf * half) if kf >= 0 else ninf
                        se = _diff(ch, ve * half) * w2 if ke >= 0 else ninf
                        sc = _diff(ch, vc * half) * w3 if kc >= 0 else ninf
                        lab, best = _choose(sf, np.float64(kf), se, np.float64(ke), sc, np.float64(kc), zero)
                    out[i - lo0, j - lo1, k - lo2] = lab


@njit(cache=True)
def _store_plane(O, dst):
    """``dst[q, r] = O[q * P + r]``: the labels of a tile plane (flat, pitch ``P``) into
    their rows of the output (a plain loop per row, which LLVM turns into wide copies)."""
    for q in range(dst.shape[0]):
        row = dst[q]
        for r in range(row.shape[0]):
            row[r] = O[q * P + r]


@njit(inline="always", cache=True)
def _part(buf, offs, k, n):
    """Part ``k`` of a thread's scratch buffer (``n`` values from ``offs[k]``)."""
    return buf[offs[k]:offs[k] + n]


@njit(cache=True)
def _tile(V, code, buf, offs, O, out, lo0, lo1, lo2, i0, j0, k0, ti, tj, tk, w2, w3, huge):
    """Labels of the tile ``[i0, i0 + ti) x [j0, j0 + tj) x [k0, k0 + tk)`` of ``V`` into
    ``out`` (whose origin is ``V``'s ``(lo0, lo1, lo2)``), with the scratch parts of
    ``buf`` at ``offs`` (see :data:`_PARTS`).  Returns the number of its planes with a
    suspect voxel (NaN, infinite or huge: :func:`_any_suspect`) and whether a 64-bit integer
    is 2**52 or more away from the tile's first voxel (64-bit integers are keyed relative
    to it, see :func:`_key`).  Either way :func:`direct_tiles` redoes the tile (after the
    host has raised for genuinely non-finite values)."""
    nbad = 0
    far = 0
    base = V[i0, j0, k0]
    ns = (TJ + 3) * P  # a scratch plane plus one row (the flat loops read a little past it)
    n = tj * P  # the output voxels of a plane, flat (columns tk..P-1 of each row: unused)
    H = _part(buf, offs, 3, ns)
    Hc = _part(buf, offs, 4, ns)
    for step in range(ti + 2):  # a ring of 3 planes: each input plane filled once
        ii = i0 - 1 + step
        s2 = step % 3
        S2 = _part(buf, offs, s2, ns)
        owned = step >= 1 and step <= ti
        if code == NATIVE:
            f = _fill(V, 0, S2.reshape((TJ + 3, P)), ii, j0, k0, tj, tk, owned, base, huge)
        else:
            f = _fill(V, code, S2.reshape((TJ + 3, P)), ii, j0, k0, tj, tk, owned, base, huge)
        nbad += f & 1
        far |= f & 2
        _prefetch_plane(V, ii + 1, j0, k0, tj, tk)
        _h_plane(S2, H, Hc, (tj + 2) * P - 2)
        G2, Gc2 = _part(buf, offs, 5 + s2, n), _part(buf, offs, 8 + s2, n)
        Q2, Qc2 = _part(buf, offs, 11 + s2, n), _part(buf, offs, 14 + s2, n)
        if step < 2:
            _gq_plane(S2, H, Hc, G2, Gc2, Q2, Qc2, n)
            continue
        s0 = (step - 2) % 3
        s1 = (step - 1) % 3
        _gq_out_plane(_part(buf, offs, s0, ns), _part(buf, offs, s1, ns), S2, H, Hc,
                      _part(buf, offs, 5 + s0, n), _part(buf, offs, 8 + s0, n),
                      _part(buf, offs, 11 + s0, n), _part(buf, offs, 14 + s0, n),
                      _part(buf, offs, 5 + s1, n), _part(buf, offs, 8 + s1, n),
                      _part(buf, offs, 11 + s1, n), _part(buf, offs, 14 + s1, n),
                      G2, Gc2, Q2, Qc2, O, n, w2, w3)
        _store_plane(O, out[ii - 1 - lo0, j0 - lo1:j0 - lo1 + tj, k0 - lo2:k0 - lo2 + tk])
    return nbad, far != 0


@njit(cache=True)
def _scratch(proto):
    """One thread's zeroed scratch buffer and the offsets of its 17 parts: the 3 ring planes
    ``S``, the row minima ``H``, ``Hc`` (``(TJ + 3) x P`` each), and the 3 ring planes of
    ``G``, ``Gc``, ``Q``, ``Qc`` (``TJ x P``), in that order.  Part ``k`` starts on the
    64-byte line ``_PARTS[k]`` modulo 4 KiB (``_PARTS64`` for 8-byte values): the lines were
    chosen (by a small search) so that, in every flat loop, each stored stream is at least
    6 lines (float32; float64: 8) away modulo 4 KiB from each loaded stream, rows of a
    plane included, so that no load is held up by a store it only seems to alias."""
    isz = proto.itemsize
    units = _PARTS if isz == 4 else _PARTS64
    ns = (TJ + 3) * P
    ng = TJ * P
    line = 64 // isz
    total = 5 * ns + 12 * ng + 18 * (4096 // isz)
    buf = np.zeros(total, proto.dtype)
    a0 = (buf.ctypes.data % 4096) // isz  # where buf starts within its 4 KiB page, in values
    offs = np.empty(17, np.int64)
    pos = 0
    for k in range(17):
        pos += (units[k] * line - (a0 + pos)) % (4096 // isz)
        offs[k] = pos
        pos += ns if k < 5 else ng
    return buf, offs


@njit(parallel=True, cache=True)
def labels_kernel(V, code, proto, out, lo0, lo1, lo2, hi0, hi1, hi2, w2, w3, huge, nthreads, redo):
    """Labels of ``V[lo0:hi0, lo1:hi1, lo2:hi2]`` into ``out`` (shape ``hi - lo``).

    Neighbours outside ``V`` are not candidates.  ``proto`` is an empty array of the compute
    dtype (its dtype is all that is used); the tiles are shared out in ``4 * nthreads``
    runs.  Returns 0 if the labelled region is finite and no float is near its dtype's
    maximum, else a positive number (the host then counts the non-finite values);
    ``redo[t]`` (bool, one per tile) is set for the tiles that :func:`direct_tiles` must
    redo (see :func:`_tile`).
    """
    m0 = hi0 - lo0
    m1 = hi1 - lo1
    m2 = hi2 - lo2
    nti = (m0 + TI - 1) // TI
    ntj = (m1 + TJ - 1) // TJ
    ntk = (m2 + TK - 1) // TK
    ntiles = nti * ntj * ntk
    nrun = max(1, min(ntiles, 4 * nthreads))
    bad = np.zeros(nrun, np.int64)
    for run in prange(nrun):
        buf, offs = _scratch(proto)
        O = np.empty(TJ * P, np.uint8)
        nbad = 0
        for t in range(run * ntiles // nrun, (run + 1) * ntiles // nrun):
            a = t // (ntj * ntk)
            rest = t - a * (ntj * ntk)
            b = rest // ntk
            cc = rest - b * ntk
            i0 = lo0 + a * TI
            j0 = lo1 + b * TJ
            k0 = lo2 + cc * TK
            nb, again = _tile(V, code, buf, offs, O, out, lo0, lo1, lo2, i0, j0, k0,
                              min(TI, hi0 - i0), min(TJ, hi1 - j0), min(TK, hi2 - k0), w2, w3, huge)
            nbad += nb
            redo[t] = again | (nb > 0)
        bad[run] = nbad
    return bad.sum()


def run_labels_cpu(V, code, out, lo, hi, cdtype, name="volume"):
    """Labels of ``V[lo:hi]`` (kernel view ``V`` with half-precision ``code``) into ``out``,
    scored in ``cdtype``; ValueError (with the NaN / inf counts) for non-finite values."""
    if out.size == 0:
        return
    w2, w3 = cdtype.type(W2), cdtype.type(W3)
    proto = np.empty(0, cdtype)
    bounds = [np.int64(x) for x in (*lo, *hi)]
    redo = np.zeros(tile_count(lo, hi), np.bool_)
    huge = cdtype.type(2.0**26 if cdtype == np.float32 else 2.0**55)
    bad = labels_kernel(V, np.int64(code), proto, out, *bounds, w2, w3, huge, np.int64(numba.get_num_threads()), redo)
    if bad:  # the kernel only detects; count them here (the error path, or huge floats)
        region = as_float(V[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], code)
        count = np.count_nonzero(~np.isfinite(region))
        if count:
            raise nonfinite_error(region, name, count)
    if redo.any():  # rare: floats near their dtype's maximum, 64-bit integers spanning 2**52
        direct_tiles(V, np.int64(code), proto, out, *bounds, np.flatnonzero(redo).astype(np.int64), w2, w3,
                     cdtype.type(0.5))


def tile_count(lo, hi):
    """How many tiles :func:`labels_kernel` cuts the region ``[lo, hi)`` into."""
    return int(np.prod([-(-(h - l) // t) for l, h, t in zip(lo, hi, (TI, TJ, TK))]))


def zero_true_faces(out, faces):
    """``border="zero"`` on a host block: 0 on every face that is a face of the volume
    (``faces[a] = (low_is_true, high_is_true)``)."""
    for a in range(3):
        if out.shape[a] == 0:
            continue
        idx = [slice(None)] * 3
        if faces[a][0]:
            idx[a] = 0
            out[tuple(idx)] = 0
        if faces[a][1]:
            idx[a] = out.shape[a] - 1
            out[tuple(idx)] = 0


def labels_block_cpu(block, faces=((True, True),) * 3, border="inside", out=None):
    """Labels of one block of a larger volume (CPU, NumPy in and out): the chunk entry point.

    Parameters
    ----------
    block : ndarray, 3-D
        The block's voxels plus a one-voxel halo on every face that is *not* a face of the
        whole volume (a true face has no halo).  Any real dtype, half precision included.
    faces : ((bool, bool), (bool, bool), (bool, bool))
        For each axis, whether the block's low / high face is a true face of the volume.
    border : {"inside", "zero"}
        As in ``descent_labels``; with ``"zero"`` the voxels on true faces get 0.
    out : ndarray of uint8, optional
        C-contiguous, shape ``block.shape`` minus one per halo face.

    Returns
    -------
    labels : ndarray of uint8, shape ``block.shape`` minus the halos
        Exactly the labels that ``descent_labels`` gives these voxels on the full volume.

    Raises
    ------
    ValueError
        If the block has NaN/inf values in its labelled region (halos are checked by the
        blocks that own them), or a halo face has no room for its halo.
    """
    check_choice(border, "border", BORDERS)
    check_volume(block, "block")
    V, code = kernel_view(block)
    lo = [0 if faces[a][0] else 1 for a in range(3)]
    hi = [V.shape[a] if faces[a][1] else V.shape[a] - 1 for a in range(3)]
    if any(h < lo_ for h, lo_ in zip(hi, lo)):
        raise ValueError(f"block of shape {tuple(V.shape)} is too small for its halos (faces={faces})")
    shape = tuple(h - l for h, l in zip(hi, lo))
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
    run_labels_cpu(V, code, out, lo, hi, compute_dtype(block.dtype), name="block")
    if border == "zero":
        zero_true_faces(out, faces)
    return out


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


def basins_from_labels_cpu(labels, out=None):
    """Descent basins from ``border="inside"`` labels (CPU): the reusable second half.

    Parameters
    ----------
    labels : ndarray of uint8, 3-D, C-contiguous
        Output of ``descent_labels`` (``border="inside"``) or of :func:`labels_block_cpu`
        for a block whose every face is a true face.
    out : ndarray of int32, optional
        C-contiguous, ``labels.shape``; it doubles as the union-find parent array.

    Returns
    -------
    basins : ndarray of int32
        Weakly connected components of the voxel -> target graph, numbered ``1..M`` in the
        C order of each component's first voxel.
    count : int
        ``M``.
    """
    n0, n1, n2 = labels.shape
    n = n0 * n1 * n2
    check_basin_voxels(n)
    if out is None:
        out = np.empty(labels.shape, np.int32)
    elif out.shape != labels.shape or out.dtype != np.int32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous int32 array of shape {labels.shape}")
    if n == 0:
        return out, 0
    L = np.ascontiguousarray(labels).reshape(n)
    P = out.reshape(n)
    plane = n1 * n2
    nslab = max(1, min(n0, 2 * numba.get_num_threads()))
    bounds = (np.linspace(0, n0, nslab + 1).round().astype(np.int64)) * plane
    off = target_offsets(np.int64(n1), np.int64(n2))
    unite_within_slabs(L, P, off, bounds)
    unite_across_slabs(L, P, off, bounds, np.int64(plane))
    count = compress_and_number(P, np.int64(plane))
    return out, int(count)


# --------------------------------------------------------------------------------------
# Chunked basins: chunk-local components, the edges that leave a chunk, the merge
# --------------------------------------------------------------------------------------


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
    ``(a[i], b[i])``: ``1..M`` in the order of each basin's smallest key.

    The components are ranked by key (keys are distinct first-voxel indices; equal keys keep
    their index order), so that ``_union``'s smaller-root rule leaves every basin's root at
    its smallest key, and roots numbered in rank order are numbered by first voxel.
    """
    n = keys.shape[0]
    order = np.argsort(keys, kind="mergesort")
    rank = np.empty(n, np.int64)
    for q in range(n):
        rank[order[q]] = q
    parent = np.arange(n)
    for i in range(a.shape[0]):
        _union(parent, rank[a[i]], rank[b[i]])
    gid = np.empty(n, np.int64)
    m = 0
    for q in range(n):  # a root is its component's smallest rank: numbered before the rest
        r = _find(parent, q)
        if r == q:
            m += 1
            gid[q] = m
        else:
            gid[q] = gid[r]
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = gid[rank[i]]
    return out


@njit(cache=True)
def apply_lut(ids, lut, out):
    """``out = lut[ids - 1]`` for a block of int32 ids numbered from 1."""
    fi = ids.reshape(ids.size)
    fo = out.reshape(out.size)
    for i in range(fi.shape[0]):
        fo[i] = lut[fi[i] - 1]


def chunk_basins_cpu(labels, origin, volume_shape):
    """Chunk-local basins of ``border="inside"`` labels of a chunk whose first voxel is global
    ``origin`` in a volume of ``volume_shape``.

    The edges that leave the chunk are cut (those voxels point at themselves; a C-contiguous
    ``labels`` is modified in place) and the whole-volume basin code runs on the chunk.

    Returns
    -------
    ids : ndarray of int32, ``labels.shape``
        Chunk-local components numbered ``1..m`` in the chunk's C order of first voxels.
    m : int
    flat : ndarray of int64
        Chunk-local flat index of every voxel whose target lies outside the chunk.
    target : ndarray of int64
        That target's global flat (C-order) index in the volume.
    """
    lab = np.ascontiguousarray(labels)
    o = [np.int64(v) for v in origin]
    flat, target = cut_leaving_edges(lab, o[0], o[1], o[2], np.int64(volume_shape[1]), np.int64(volume_shape[2]))
    ids, m = basins_from_labels_cpu(lab)
    return ids, int(m), flat, target
