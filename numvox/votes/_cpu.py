"""CPU kernels for vote aggregation and heatmap peaks (Numba, ``parallel=True``).

Input views
-----------
The probabilities and offsets reach the scatter kernel in one of two forms:

* *contiguous* (float32 / float64, or float16 / bfloat16 as ``uint16`` bits,
  C-contiguous): 2-D views ``(B*X*Y, Z*C)`` of the channels-last arrays, so a source line
  ``(b, x, y)`` is one contiguous run of ``Z*C`` numbers that the threshold scan reads as a
  flat vector.  Half-precision probabilities (threshold > 0 only) are scanned as bits:
  ``thr_scan = (lo, hi)``, ``lo`` the bits of the smallest half value >= the threshold and
  ``hi`` those of +inf, so ``lo <= bits <= hi`` is exactly ``value >= threshold`` (negative
  values have bit 15 set, NaNs lie above +inf); a vote's weight and offsets are decoded
  from their bits when read (each array has its own code);
* *strided* (any other dtype, memory order or view; half-precision probabilities with a
  threshold <= 0): the 5-D arrays, indexed with their own strides; the scan converts each
  line segment into a small float64 buffer first (never a copy of the whole input).

Helpers written with ``@overload`` choose the access for each form at compile time, so the
kernel is written once.

Scan
----
A line is cut into segments of at most ``SEG`` voxels.  A segment is scanned in blocks of
``NB = (64 // C) * C`` numbers (whole voxels): one 64-lane vector compare
(:func:`_mask64`; a scalar loop for the segment's last, short block) builds the block's
64-bit mask of ``value >= threshold``, the background channel is masked
out and the set bits (``tzcnt``) list the votes, so blocks without votes (most blocks of a
real network output) cost one vectorised compare per number.  Each vote found has its
offsets prefetched at once (the only offsets ever read); a second loop turns the votes into
target indices and weights (range checks in float64 before any conversion to integers:
NaN and huge values fail them) and a third adds them into the heatmaps.  The three loops
run as a software pipeline over the segments (each step finds the votes of segment t, turns
those of t - 1 into targets and adds those of t - 2), which keeps the many cache misses of
scattered votes overlapping and gives every offset prefetch a segment's work to arrive.

Threads and balance: the chunks of source rows (below) are cut by
:func:`work_split` from a sampled vote count (:func:`vote_profile`),
because votes cluster around the landmarks and an even split can leave one thread most of
them.

Write conflicts
---------------
The source rows ``(b, x)`` are split into ``nchunks`` contiguous ranges, one per thread, and
thread ``c`` *owns* the heatmap rows ``(b, x)`` of its range.  A vote whose target row it
owns is added at once; any other vote (one crossing a chunk boundary) goes to the thread's
*deferred* list (flat index, weight), which :func:`apply_deferred` adds afterwards, each
owner in parallel adding the entries in its rows.  The lists have a fixed capacity (all
together at most half the output's bytes, mapped lazily): a thread whose list could
overflow stops at a line boundary, and the host runs another round after applying the
lists.  No atomics, no private copies of the output.  The float32 sums depend only on the
number of threads (which decides the order of the additions), not on the input layout.
"""

import threading

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, typeof, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .._shared.halfprec import FLOAT16, NATIVE, half_code, load_f64
from ._peak import peak_cpu
from ._splat import channels_cpu, corner_cpu, in_reach_cpu, linear_cell_cpu, nearest_voxel_cpu

SEG = 2048  # voxels per line segment: bounds the per-thread scratch lists
_PROFILE_VOXELS = 1 << 20  # balance the threads' chunks (see work_split) from this size on
_VOTE_COST = 64.0  # one vote's work, in numbers scanned (measured: ~18-40 ns vs ~0.3 ns)
_DEFERRED_FRACTION = 2  # the deferred lists hold at most 1/_DEFERRED_FRACTION of the output bytes


_COMPILE_LOCK = threading.Lock()


def launch(kernel, *args, inputs=(), contiguous=()):
    """Call ``kernel(*args)`` through one compiled signature per input dtype and form.

    The arrays at positions ``inputs`` are typed as read-only ``'A'``-layout arrays (``'C'``
    for those also in ``contiguous``, which must be C-contiguous: the contiguous scan
    relies on it), so writeable and read-only inputs, C, F and strided views share compiled
    (and cached) kernels instead of one per combination; Numba converts the actual
    arguments to that signature (a safe conversion) once compiling new specialisations is
    switched off.  (A C array typed ``'C'`` in one signature and ``'A'`` in another of the
    same rank would make the call ambiguous: the contiguous form is 2-D, the strided 5-D.)
    """
    sig = tuple(
        typeof(a).copy(layout="C" if i in contiguous else "A", readonly=True) if i in inputs else typeof(a)
        for i, a in enumerate(args)
    )
    with _COMPILE_LOCK:
        if sig not in kernel.overloads:
            kernel.disable_compile(False)
            try:
                kernel.compile(sig)
            finally:
                kernel.disable_compile(True)
    return kernel(*args)


# ------------------------------------------------------------------ low-level helpers -----
@intrinsic
def _prefetch(typingctx, arr, index):
    """Ask the CPU to fetch the cache line of ``arr[index]`` (``index``: a tuple with one
    in-bounds int per dimension).  ``llvm.prefetch``: a hint, no effect on results."""
    if not isinstance(arr, types.Array) or not isinstance(index, types.BaseTuple) or len(index) != arr.ndim:
        return None

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [context.cast(builder, v, t, types.intp) for v, t in zip(cgutils.unpack_tuple(builder, args[1]), idxty)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [i8p, i32(0), i32(3), i32(1)])  # read, keep in all cache levels, data
        return context.get_dummy_value()

    return types.void(arr, index), codegen


@intrinsic
def _ctz(typingctx, v):
    """The number of trailing zero bits of a non-zero ``uint64`` (``tzcnt``)."""
    if v != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.IntType(1)(1))

    return types.int64(v), codegen


@intrinsic
def _mask64(typingctx, arr, start, thr):
    """The votes among the 64 numbers ``arr[start:start + 64]`` (``start + 64 <= arr.size``)
    as a ``uint64`` (bit ``j``: element ``start + j``), the test as :func:`_passes`:
    ``v >= thr``, or ``lo <= v <= hi`` for half-precision bits and ``thr = (lo, hi)``.

    One 64-lane vector compare in LLVM IR, which the backend splits into native compares and
    sign-mask moves (``vcmpps`` + ``vmovmskps`` on AVX2): a fraction of the work of a
    shift-and-or per element, so that the scan runs at memory speed.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        return None
    bits = isinstance(thr, types.BaseTuple)
    if bits and arr.dtype != types.uint16:
        return None
    if not bits and not isinstance(arr.dtype, types.Float):
        return None

    def codegen(context, builder, signature, args):
        aryty, _, thrty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        elt = context.get_data_type(aryty.dtype)
        vec = ir.VectorType(elt, 64)
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), vec.as_pointer())
        v = builder.load(ptr, align=context.get_abi_sizeof(elt))
        undef = ir.Constant(vec, ir.Undefined)
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64)

        def splat(x):
            return builder.shuffle_vector(builder.insert_element(undef, x, ir.IntType(32)(0)), undef, zeros)

        if bits:
            lo, hi = cgutils.unpack_tuple(builder, args[2])
            m = builder.and_(builder.icmp_unsigned(">=", v, splat(lo)), builder.icmp_unsigned("<=", v, splat(hi)))
        else:
            m = builder.fcmp_ordered(">=", v, splat(context.cast(builder, args[2], thrty, aryty.dtype)))
        return builder.bitcast(m, ir.IntType(64))

    return types.uint64(arr, types.intp, thr), codegen


def _segment(P, pcode, line, b, x, y, z0, z1, C, buf):
    """Voxels ``z0:z1`` of source line ``(b, x, y)`` as a flat ``((z1 - z0) * C,)`` array:
    a view of a contiguous input, else ``buf`` filled with the converted values."""


def _offset(O, ocode, line, b, x, y, z, ch, K):
    """``float64(offsets[b, x, y, z, ch])`` (``K = 3L`` channels)."""


def _prefetch_offset(O, line, b, x, y, z, ch, K):
    """Prefetch the cache line holding ``offsets[b, x, y, z, ch]``."""


def _weight(P, pcode, vals, i):
    """``float64`` of the probability ``vals[i]`` of a segment from :func:`_segment`."""


def _passes(v, thr_scan):
    """Whether the scanned value ``v`` votes: ``v >= thr_scan`` for float data; for
    half-precision bits ``thr_scan = (lo, hi)`` and ``lo <= v <= hi``."""


@overload(_weight)
def _weight_impl(P, pcode, vals, i):
    if P.ndim == 2:

        def contiguous(P, pcode, vals, i):
            return load_f64(vals, i, pcode)  # float16 / bfloat16 bits decoded

        return contiguous

    def strided(P, pcode, vals, i):
        return vals[i]  # already float64

    return strided


@overload(_passes)
def _passes_impl(v, thr_scan):
    if isinstance(thr_scan, types.BaseTuple):

        def bits(v, thr_scan):
            return (v >= thr_scan[0]) & (v <= thr_scan[1])

        return bits

    def plain(v, thr_scan):
        return v >= thr_scan

    return plain


@overload(_segment)
def _segment_impl(P, pcode, line, b, x, y, z0, z1, C, buf):
    if P.ndim == 2:

        def contiguous(P, pcode, line, b, x, y, z0, z1, C, buf):
            return P[line, z0 * C : z1 * C]

        return contiguous

    def strided(P, pcode, line, b, x, y, z0, z1, C, buf):
        k = 0
        for z in range(z0, z1):
            for c in range(C):
                buf[k] = load_f64(P, (b, x, y, z, c), pcode)
                k += 1
        return buf[:k]

    return strided


@overload(_offset)
def _offset_impl(O, ocode, line, b, x, y, z, ch, K):
    if O.ndim == 2:

        def contiguous(O, ocode, line, b, x, y, z, ch, K):
            return load_f64(O, (line, z * K + ch), ocode)  # half precision: decoded bits

        return contiguous

    def strided(O, ocode, line, b, x, y, z, ch, K):
        return load_f64(O, (b, x, y, z, ch), ocode)

    return strided


@overload(_prefetch_offset)
def _prefetch_offset_impl(O, line, b, x, y, z, ch, K):
    if O.ndim == 2:

        def contiguous(O, line, b, x, y, z, ch, K):
            _prefetch(O, (line, z * K + ch))

        return contiguous

    def strided(O, line, b, x, y, z, ch, K):
        _prefetch(O, (b, x, y, z, ch))

    return strided


@njit(inline="always", cache=True)
def _vote_offsets(O, ocode, line, b, x, y, z, l, L, landmark_major, K):
    """``float64`` offsets ``(ox, oy, oz)`` of landmark ``l``'s vote from source voxel
    ``(b, x, y, z)`` (in ``O``'s own coordinates; ``line`` for the contiguous form)."""
    cx, cy, cz = channels_cpu(l, L, landmark_major)
    ox = _offset(O, ocode, line, b, x, y, z, cx, K)
    oy = _offset(O, ocode, line, b, x, y, z, cy, K)
    oz = _offset(O, ocode, line, b, x, y, z, cz, K)
    return ox, oy, oz


# ------------------------------------------------------------------------ scatter ---------
@njit(cache=True)
def _block_tables(C):
    """The scan's per-block tables for ``C`` channels: ``NB = (64 // C) * C`` numbers per
    block (0 when C > 64: plain scan), the mask ``chan`` of the landmark channels among
    them, and for bit ``j`` its voxel ``jq[j]`` and landmark ``jl[j]`` (no divisions)."""
    NB = (64 // C) * C
    chan = np.uint64(0)
    jq = np.empty(64, np.int64)
    jl = np.empty(64, np.int64)
    for j in range(NB):
        jq[j] = j // C
        jl[j] = j % C - 1
        if j % C:
            chan |= np.uint64(1) << np.uint64(j)
    return NB, chan, jq, jl


@njit(inline="always", cache=True)
def _find_votes(P, pcode, O, thr_scan, line, b, x, y, z0, z1, C, L, K, landmark_major, buf, NB, chan,
                jq, jl, vz, vl, vw, slot):
    """Stage A: the votes of voxels ``z0:z1`` of source line ``(b, x, y)`` into slot
    ``slot`` of ``vz`` (voxel) / ``vl`` (landmark) / ``vw`` (weight), prefetching their
    offsets; returns their number."""
    vals = _segment(P, pcode, line, b, x, y, z0, z1, C, buf)
    n = vals.size
    nv = 0
    if NB:
        for s in range(0, n, NB):
            if s + 64 <= n:
                bits = _mask64(vals, s, thr_scan)  # bits >= NB are cleared by chan
            else:
                blk = vals[s : min(s + NB, n)]
                bits = np.uint64(0)
                for j in range(blk.size):
                    bits |= np.uint64(_passes(blk[j], thr_scan)) << np.uint64(j)
            bits &= chan
            zs = z0 + s // C
            while bits:
                j = _ctz(bits)
                bits &= bits - np.uint64(1)
                z = zs + jq[j]
                l = jl[j]
                vz[slot, nv] = z
                vl[slot, nv] = l
                vw[slot, nv] = _weight(P, pcode, vals, s + j)
                nv += 1
                cx, cy, cz = channels_cpu(l, L, landmark_major)
                _prefetch_offset(O, line, b, x, y, z, cx, K)
                _prefetch_offset(O, line, b, x, y, z, cz, K)
    else:
        for q in range(z1 - z0):
            for l in range(L):
                if _passes(vals[q * C + l + 1], thr_scan):
                    vz[slot, nv] = z0 + q
                    vl[slot, nv] = l
                    vw[slot, nv] = _weight(P, pcode, vals, q * C + l + 1)
                    nv += 1
    return nv


@njit(inline="always", cache=True)
def _unit_targets(O, ocode, pline, dims, L, K, landmark_major, linear, vz, vl, vw, nv, ps, tidx, tw,
                  r0, r1, c, nchunks, didx, dval, d):
    """Stage B: the targets (flat index into the heatmaps, float32 weight) of the ``nv``
    votes in A-slot ``ps`` of source line ``pline``: those in the rows ``[r0, r1)`` the
    chunk owns into T-slot ``ps`` of ``tidx`` / ``tw``, the others into the chunk's
    deferred list ``c`` from position ``d``.  Returns ``(owned count, new d)``."""
    X, Y, Z = dims[1], dims[2], dims[3]
    fX, fY, fZ = np.float64(X), np.float64(Y), np.float64(Z)
    lo = np.float64(r0)
    hi = np.float64(r1)
    row = pline // Y
    y = pline - row * Y
    b = row // X
    x = row - b * X
    fb = np.float64(b)
    k = 0
    for i in range(nv):
        z = vz[ps, i]
        l = vl[ps, i]
        p = vw[ps, i]
        ox, oy, oz = _vote_offsets(O, ocode, pline, b, x, y, z, l, L, landmark_major, K)
        tx = x + ox
        ty = y + oy
        tz = z + oz
        if not linear:
            # branch-free (a branch on offsets that miss the cache would stop the next
            # votes' loads); indices computed exactly in float64
            ok, fx, fy, fz = nearest_voxel_cpu(tx, ty, tz, fX, fY, fZ)
            trow = fb * fX + fx
            own = (trow >= lo) & (trow < hi)
            f = ((np.float64(b * L + l) * fX + fx) * fY + fy) * fZ + fz
            t = int(f) if ok else 0
            w = np.float32(p)
            tidx[ps, k] = t
            tw[ps, k] = w
            k += ok & own
            if nchunks > 1:
                didx[c, d] = t
                dval[c, d] = w
                d += ok & (not own)
            continue
        if not in_reach_cpu(tx, ty, tz, fX, fY, fZ):
            continue
        ix0, iy0, iz0, wx1, wy1, wz1 = linear_cell_cpu(tx, ty, tz)
        for dx in range(2):
            ix, wx = corner_cpu(ix0, wx1, dx)
            if ix < 0 or ix >= X:
                continue
            trow = b * X + ix
            own = trow >= r0 and trow < r1
            for dy in range(2):
                iy, wy = corner_cpu(iy0, wy1, dy)
                if iy < 0 or iy >= Y:
                    continue
                wxy = wx * wy
                for dz in range(2):
                    iz, wz = corner_cpu(iz0, wz1, dz)
                    if iz < 0 or iz >= Z:
                        continue
                    t = (((b * L + l) * X + ix) * Y + iy) * Z + iz
                    w = np.float32(p * (wxy * wz))
                    if own:
                        tidx[ps, k] = t
                        tw[ps, k] = w
                        k += 1
                    else:
                        didx[c, d] = t
                        dval[c, d] = w
                        d += 1
    return k, d


@njit(parallel=True, cache=True)
def aggregate_cpu(P, pcode, O, ocode, thr_scan, dims, L, landmark_major, linear, out, bounds, resume,
                  didx, dval, dcount):
    """Scatter the votes of ``P`` / ``O`` (see the module docstring for their two forms)
    into ``out``, the flat C-order ``(B, L, X, Y, Z)`` float32 heatmaps.

    ``thr_scan``: the threshold in the scan's dtype (for float32 input the smallest float32
    >= the threshold, which decides every value exactly as the float64 threshold; for
    contiguous half-precision bits the ``uint16`` pair ``(lo, hi)``, see the module
    docstring); ``dims = (B, X, Y, Z)``; ``bounds`` ``(nchunks + 1,)`` the chunks' source rows
    ``b * X + x``; ``resume[c]`` the first line ``(b * X + x) * Y + y`` chunk ``c`` still has
    to scan (updated); ``didx`` / ``dval`` ``(nchunks, cap)`` the deferred lists and
    ``dcount`` their lengths (updated).

    Each thread runs a software pipeline over the units (line, segment) of its chunk: in
    step t, stage C adds the owned votes of unit t - 2 to ``out``, stage B
    (:func:`_unit_targets`) turns the votes of unit t - 1 into targets and stage A
    (:func:`_find_votes`) finds the votes of unit t, prefetching their offsets, so that
    every prefetch has a unit's work to arrive.  A-slot u % 2 (vz / vl / vw / vn) and T-slot
    u % 2 (tidx / tw / tk) hold unit u.
    """
    X, Y, Z = dims[1], dims[2], dims[3]
    C = L + 1
    K = 3 * L
    nchunks = bounds.size - 1
    cap = didx.shape[1]
    seg = min(Z, SEG)
    per_seg = seg * L * (8 if linear else 1)  # most entries one segment can add
    NB, chan, jq, jl = _block_tables(C)
    for c in prange(nchunks):
        vz = np.empty((2, seg * L), np.int64)
        vl = np.empty((2, seg * L), np.int64)
        vw = np.empty((2, seg * L), np.float64)
        vn = np.zeros(2, np.int64)
        pl = np.zeros(2, np.int64)  # the line of the unit in A-slot u % 2
        has_a = np.zeros(2, np.bool_)
        tidx = np.empty((2, per_seg), np.int64)
        tw = np.empty((2, per_seg), np.float32)
        tk = np.zeros(2, np.int64)
        has_t = np.zeros(2, np.bool_)
        buf = np.empty(seg * C, np.float64)
        line_end = bounds[c + 1] * Y
        d = dcount[c]
        line = resume[c]
        z0 = 0
        slot = 0
        stopped = False
        while True:
            if has_t[slot]:  # C: add unit t - 2's owned votes
                for i in range(tk[slot]):
                    out[tidx[slot, i]] += tw[slot, i]
                has_t[slot] = False
            ps = 1 - slot
            if has_a[ps]:  # B: targets of unit t - 1
                tk[ps], d = _unit_targets(O, ocode, pl[ps], dims, L, K, landmark_major, linear, vz, vl, vw,
                                          vn[ps], ps, tidx, tw, bounds[c], bounds[c + 1], c, nchunks,
                                          didx, dval, d)
                has_t[ps] = True
                has_a[ps] = False
            # A: votes of unit t
            if not stopped and (line >= line_end or (
                    z0 == 0 and nchunks > 1 and d + Z * L * (8 if linear else 1) > cap)):
                stopped = True  # done, or the deferred list could overflow: next round
            if stopped:
                if not (has_a[ps] or has_t[ps] or has_t[slot]):
                    break
            else:
                row = line // Y
                b = row // X
                vn[slot] = _find_votes(P, pcode, O, thr_scan, line, b, row - b * X, line - row * Y, z0,
                                       min(z0 + seg, Z), C, L, K, landmark_major, buf, NB, chan, jq, jl,
                                       vz, vl, vw, slot)
                pl[slot] = line
                has_a[slot] = True
                z0 += seg
                if z0 >= Z:
                    z0 = 0
                    line += 1
            slot = 1 - slot
        resume[c] = line
        dcount[c] = d


@njit(parallel=True, cache=True)
def vote_profile(P, pcode, thr_scan, dims, L, step, counts):
    """``counts[b * X + x]``: the votes on the source lines ``y = x % step, x % step + step,
    ...`` of each source row (a ``1 / step`` sample, staggered between rows), for
    :func:`work_split` to balance the chunks of :func:`aggregate_cpu`."""
    B, X, Y, Z = dims[0], dims[1], dims[2], dims[3]
    C = L + 1
    seg = min(Z, SEG)
    for row in prange(B * X):
        buf = np.empty(seg * C, np.float64)
        b = row // X
        x = row - b * X
        n = 0
        for y in range(row % step, Y, step):
            line = row * Y + y
            for z0 in range(0, Z, seg):
                z1 = min(z0 + seg, Z)
                vals = _segment(P, pcode, line, b, x, y, z0, z1, C, buf)
                for i in range(vals.size):  # every channel (a vectorised count) ...
                    n += _passes(vals[i], thr_scan)
                for i in range(0, vals.size, C):  # ... less the background's
                    n -= _passes(vals[i], thr_scan)
        counts[row] = n


@njit(parallel=True, cache=True)
def apply_deferred(out, dims, L, bounds, didx, dval, dcount):
    """Add the deferred votes: owner ``o`` adds, in parallel with the other owners, every
    entry of the other chunks' lists whose target row ``b * X + x`` it owns."""
    X, Y, Z = dims[1], dims[2], dims[3]
    nchunks = bounds.size - 1
    for o in prange(nchunks):
        r0 = bounds[o]
        r1 = bounds[o + 1]
        for c in range(nchunks):
            if c == o:
                continue  # a chunk never defers a vote to itself
            if nchunks == 2:  # every entry of the other list is o's: no divisions
                for i in range(dcount[c]):
                    out[didx[c, i]] += dval[c, i]
                continue
            for i in range(dcount[c]):
                t = didx[c, i]
                q = t // (Y * Z)  # (b * L + l) * X + x
                bl = q // X
                row = (bl // L) * X + (q - bl * X)
                if row >= r0 and row < r1:
                    out[t] += dval[c, i]


# ------------------------------------------------------------------- Dask blocks ----------
@njit(inline="always", cache=True)
def _block_add(keys, vals, dense, mode, cnt, gb, bb, l, ix, iy, iz, v, L, X, Y, Z, tgt_lo, tgt_hi):
    """Record one contribution ``v`` at global voxel ``(ix, iy, iz)`` of landmark ``l``, batch
    item ``gb`` (``bb`` in the block) for :func:`block_votes`; returns the new count."""
    if ix < tgt_lo[0] or ix >= tgt_hi[0] or iy < tgt_lo[1] or iy >= tgt_hi[1] or iz < tgt_lo[2] or iz >= tgt_hi[2]:
        return cnt
    if mode == 1:
        keys[cnt] = (((gb * L + l) * X + ix) * Y + iy) * Z + iz
        vals[cnt] = v
    elif mode == 2:
        dense[bb, l, ix - tgt_lo[0], iy - tgt_lo[1], iz - tgt_lo[2]] += v
    return cnt + 1


@njit(cache=True)
def block_votes(P, pcode, O, ocode, origin, thr, L, landmark_major, linear, shape, src_lo, src_hi, tgt_lo,
                tgt_hi, maxoff, keys, vals, dense, mode):
    """One pass over the votes of a Dask block ``P`` (b, x, y, z, L+1) / ``O`` (b, x, y, z,
    3L) whose first voxel is global ``origin = (b0, x0, y0, z0)`` in a volume of ``shape =
    (X, Y, Z)``: the landing rule of :mod:`numvox.votes._splat` and the threshold and
    offset reads of :func:`aggregate_cpu` (strided form) with global coordinates, so every
    contribution is exactly the in-memory kernel's (position ``global index + offset`` in
    float64, contribution rounded to float32).

    Sources are the block voxels in ``[src_lo, src_hi)`` (block coordinates, x y z);
    contributions count only inside the global box ``[tgt_lo, tgt_hi)``.  ``mode`` 0: count
    them; 1: write ``keys`` (global flat index over (B, L, X, Y, Z)) and ``vals``; 2: add
    into ``dense`` (b, L, tx, ty, tz) relative to ``tgt_lo``.  Returns ``(count,
    violations)``; a violation is a vote in reach of the volume with an offset component
    larger than ``maxoff`` in magnitude (it contributes nothing).
    """
    b0, x0, y0, z0 = origin[0], origin[1], origin[2], origin[3]
    X, Y, Z = shape[0], shape[1], shape[2]
    fX, fY, fZ = np.float64(X), np.float64(Y), np.float64(Z)
    K = 3 * L
    cnt = 0
    bad = 0
    for bb in range(P.shape[0]):
        gb = b0 + bb
        for xx in range(src_lo[0], src_hi[0]):
            x = x0 + xx
            for yy in range(src_lo[1], src_hi[1]):
                y = y0 + yy
                for zz in range(src_lo[2], src_hi[2]):
                    z = z0 + zz
                    for l in range(L):
                        p = load_f64(P, (bb, xx, yy, zz, l + 1), pcode)
                        if not _passes(p, thr):
                            continue
                        ox, oy, oz = _vote_offsets(O, ocode, 0, bb, xx, yy, zz, l, L, landmark_major, K)
                        tx = x + ox
                        ty = y + oy
                        tz = z + oz
                        if not in_reach_cpu(tx, ty, tz, fX, fY, fZ):
                            continue
                        if not (abs(ox) <= maxoff and abs(oy) <= maxoff and abs(oz) <= maxoff):
                            bad += 1
                            continue
                        if not linear:
                            ok, fx, fy, fz = nearest_voxel_cpu(tx, ty, tz, fX, fY, fZ)
                            if ok:
                                cnt = _block_add(keys, vals, dense, mode, cnt, gb, bb, l, int(fx), int(fy),
                                                 int(fz), np.float32(p), L, X, Y, Z, tgt_lo, tgt_hi)
                            continue
                        ix0, iy0, iz0, wx1, wy1, wz1 = linear_cell_cpu(tx, ty, tz)
                        for dx in range(2):
                            ix, wx = corner_cpu(ix0, wx1, dx)
                            if ix < 0 or ix >= X:
                                continue
                            for dy in range(2):
                                iy, wy = corner_cpu(iy0, wy1, dy)
                                if iy < 0 or iy >= Y:
                                    continue
                                wxy = wx * wy
                                for dz in range(2):
                                    iz, wz = corner_cpu(iz0, wz1, dz)
                                    if iz < 0 or iz >= Z:
                                        continue
                                    cnt = _block_add(keys, vals, dense, mode, cnt, gb, bb, l, ix, iy, iz,
                                                     np.float32(p * (wxy * wz)), L, X, Y, Z, tgt_lo, tgt_hi)
    return cnt, bad


def _block_args(P, pcode, O, ocode, origin, thr, L, landmark_major, linear, shape):
    return (P, np.int64(pcode), O, np.int64(ocode), np.asarray(origin, np.int64), np.float64(thr), np.int64(L),
            bool(landmark_major), bool(linear), np.asarray(shape, np.int64))


def scatter_sparse(P, pcode, O, ocode, origin, thr, L, landmark_major, linear, shape):
    """All contributions of a block's votes (see :func:`block_votes`): ``(keys int64, vals
    float64)``, keys the global flat indices over (B, L, X, Y, Z)."""
    common = _block_args(P, pcode, O, ocode, origin, thr, L, landmark_major, linear, shape)
    src_lo = np.zeros(3, np.int64)
    src_hi = np.array(P.shape[1:4], np.int64)
    tgt_lo = np.zeros(3, np.int64)
    tgt_hi = np.asarray(shape, np.int64)
    dummy_d = np.empty((0, 0, 0, 0, 0), np.float64)
    args = common + (src_lo, src_hi, tgt_lo, tgt_hi, np.inf)
    n, _ = block_votes(*args, np.empty(0, np.int64), np.empty(0, np.float64), dummy_d, np.int64(0))
    keys = np.empty(n, np.int64)
    vals = np.empty(n, np.float64)
    block_votes(*args, keys, vals, dummy_d, np.int64(1))
    return keys, vals


def scatter_dense(P, pcode, O, ocode, origin, core_lo, core_hi, thr, L, landmark_major, linear, shape, maxoff):
    """Heatmaps (b, L, core) in float64 of the votes of a haloed block (first voxel global
    ``origin``) that land in the core box ``[core_lo, core_hi)`` (global x y z); returns
    ``(dense, violations)``, the violations being votes of core sources whose offsets exceed
    ``maxoff``."""
    common = _block_args(P, pcode, O, ocode, origin, thr, L, landmark_major, linear, shape)
    core_lo = np.asarray(core_lo, np.int64)
    core_hi = np.asarray(core_hi, np.int64)
    dense = np.zeros((P.shape[0], L, *(core_hi - core_lo)), np.float64)
    dummy_k = np.empty(0, np.int64)
    dummy_v = np.empty(0, np.float64)
    origin3 = np.asarray(origin[1:], np.int64)
    # every voxel of the haloed block votes into the core (offsets unchecked here) ...
    block_votes(*common, np.zeros(3, np.int64), np.array(P.shape[1:4], np.int64), core_lo, core_hi, np.inf,
                dummy_k, dummy_v, dense, np.int64(2))
    # ... and the core's own voxels are checked against the halo's reach
    _, bad = block_votes(*common, core_lo - origin3, core_hi - origin3, core_lo, core_lo, np.float64(maxoff),
                         dummy_k, dummy_v, dense, np.int64(0))
    return dense, bad


@njit(parallel=True, cache=True)
def row_maxima(H, code, vals, idx):
    """Per row ``(n, x)`` of ``H`` (B, L, X, Y, Z), n = b * L + l: the largest value (NaN
    skipped) and its first flat ``y * Z + z`` position (-1 when the row has no value above
    -inf)."""
    B, L, X, Y, Z = H.shape
    N = B * L
    for r in prange(N * X):
        n = r // X
        x = r - n * X
        b = n // L
        l = n - b * L
        best = -np.inf
        bi = -1
        for y in range(Y):
            for z in range(Z):
                v = load_f64(H, (b, l, x, y, z), code)
                if v > best:
                    best = v
                    bi = y * Z + z
        vals[n, x] = best
        idx[n, x] = bi


@njit(parallel=True, cache=True)
def peaks_from_rows(H, code, vals, idx, radius, coords, values):
    """Reduce the row maxima to the arg-max of each heatmap, then apply the peak rule
    (:mod:`numvox.votes._peak`: the weighted centroid of the clipped window around it)."""
    B, L, X, Y, Z = H.shape
    N = B * L
    for n in prange(N):
        b = n // L
        l = n - b * L
        best = -np.inf
        bx = -1
        for x in range(X):
            if idx[n, x] >= 0 and (bx < 0 or vals[n, x] > best):
                best = vals[n, x]
                bx = x
        bi = -1 if bx < 0 else bx * (Y * Z) + idx[n, bx]
        peak_cpu(H, code, b, l, best, bi, radius, coords, values, n)


# ------------------------------------------------------------------ host drivers ---------
def work_split(B, X, Y, threads, votes=None, step=1, Z=1, C=1):
    """``bounds``: the source rows ``b * X + x`` of the CPU kernel's chunks (one per thread,
    see :func:`aggregate_cpu`), as an int64 array ``(nchunks + 1,)``.

    Fewer chunks than threads for tiny volumes (fewer than 64 lines per chunk), so that a
    deferred list of half the output's size always holds one line's votes.  Without
    ``votes`` the rows are split evenly; with ``votes`` (``(B * X,)`` vote counts sampled
    on every ``step``-th line, from :func:`vote_profile`) the chunks get
    equal estimated work: ``Z * C`` numbers scanned per line plus ``_VOTE_COST`` per vote.
    Votes cluster where a network sees its landmarks, so an even split can leave one
    thread with most of them.
    """
    R = B * X
    nchunks = max(1, min(int(threads), R, (R * Y) // 64))
    if votes is None or nchunks == 1:
        return np.array([c * R // nchunks for c in range(nchunks + 1)], np.int64)
    cost = np.cumsum(float(Y * Z * C) + _VOTE_COST * float(step) * votes.astype(np.float64))
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, nchunks) / nchunks, side="right")
    bounds = np.concatenate(([0], cuts, [R])).astype(np.int64)
    c = np.arange(nchunks + 1)
    return np.clip(bounds, c, R - nchunks + c)  # every chunk keeps at least one row


def scan_threshold(thr, dtype, code=NATIVE):
    """The threshold in the scan's dtype: for float32 data the smallest float32 ``t >= thr``,
    so that ``v >= t`` in float32 decides exactly as ``float64(v) >= thr``.

    For half-precision bits (``code`` FLOAT16 / BFLOAT16, ``thr > 0`` only) a pair of
    ``uint16`` ``(lo, hi)``: ``lo`` the bits of the smallest half value ``>= thr`` and
    ``hi`` those of +inf, so that ``lo <= bits <= hi`` decides exactly as ``value >= thr``
    (the positive values order as their bits; negative values have bit 15 set and NaNs
    lie above +inf).  A ``thr`` above the largest finite value gives ``lo = hi``: +inf only.
    """
    if code != NATIVE:
        if not thr > 0:
            raise ValueError("the half-precision bit scan needs a positive threshold")
        if code == FLOAT16:
            with np.errstate(over="ignore"):
                t = np.float16(thr)  # round to nearest (inf above the finite range)
                if float(t) < thr:
                    t = np.nextafter(t, np.float16(np.inf))
            return (np.uint16(t.view(np.uint16)), np.uint16(0x7C00))
        t32 = scan_threshold(thr, np.float32)  # smallest float32 >= thr (inf above the range)
        b32 = int(np.float32(t32).view(np.uint32))
        lo = (b32 >> 16) + (1 if b32 & 0xFFFF else 0)  # bfloat16: the upper 16 bits, rounded up
        return (np.uint16(min(lo, 0x7F80)), np.uint16(0x7F80))
    if np.dtype(dtype) != np.float32:
        return np.float64(thr)
    with np.errstate(over="ignore"):
        t = np.float32(thr)
    if float(t) < thr:
        t = np.nextafter(t, np.float32(np.inf))
    return np.float32(t)


def _contiguous_float(a, code=NATIVE):
    """C-contiguous float32 / float64 data, or float16 / bfloat16 bits (``code``)."""
    return a.flags.c_contiguous and (a.dtype in (np.float32, np.float64) or (code != NATIVE and a.dtype == np.uint16))


def aggregate_host(P, pcode, O, ocode, thr, L, landmark_major, linear, out5):
    """Scatter the votes of the 5-D kernel views ``P`` / ``O`` into the zeroed float32
    heatmaps ``out5`` (B, L, X, Y, Z): the contiguous or strided form, the threads' chunks,
    and as many rounds of :func:`aggregate_cpu` + :func:`apply_deferred` as the deferred
    lists need."""
    B, X, Y, Z = (int(s) for s in P.shape[:4])
    # Half-precision probabilities are scanned as bits, which needs thr > 0 (at thr <= 0
    # -0.0 and the negative values' ordering would need sign handling): strided path else.
    if _contiguous_float(P, pcode) and _contiguous_float(O, ocode) and (pcode == NATIVE or thr > 0):
        # (B*X*Y, Z*C) views: every source line is one contiguous run (no copy); float16 /
        # bfloat16 stay uint16 bits, decoded only where a vote is read
        P = P.reshape(B * X * Y, Z * (L + 1))
        O = O.reshape(B * X * Y, Z * 3 * L)
        thr_scan = scan_threshold(thr, P.dtype, pcode)
        contiguous = (0, 2)
    else:
        thr_scan = np.float64(thr)
        contiguous = ()
    dims = np.array([B, X, Y, Z], np.int64)
    threads = numba.get_num_threads()
    votes, step = None, 16
    if threads > 1 and B * X * Y * Z >= _PROFILE_VOXELS:
        votes = np.empty(B * X, np.int64)
        launch(vote_profile, P, np.int64(pcode), thr_scan, dims, np.int64(L), np.int64(step), votes,
               inputs=(0,), contiguous=contiguous[:1])
    bounds = work_split(B, X, Y, threads, votes, step, Z, L + 1)
    nchunks = len(bounds) - 1
    # Deferred lists (int64 index + float32 weight): at most half the output's bytes in
    # all, but at least two lines' votes (2 * Z * L * 8; the kernel stops a round when less
    # than one line's room is left), mapped by the OS only where written (np.empty).
    cap = 0 if nchunks == 1 else max(out5.size // (3 * _DEFERRED_FRACTION * nchunks), 2 * Z * L * 8)
    didx = np.empty((nchunks, cap), np.int64)
    dval = np.empty((nchunks, cap), np.float32)
    dcount = np.zeros(nchunks, np.int64)
    resume = bounds[:-1] * Y
    out = out5.reshape(-1)
    while True:
        launch(
            aggregate_cpu, P, np.int64(pcode), O, np.int64(ocode), thr_scan, dims, np.int64(L),
            bool(landmark_major), bool(linear), out, bounds, resume, didx, dval, dcount,
            inputs=(0, 2), contiguous=contiguous,
        )
        if dcount.any():
            launch(apply_deferred, out, dims, np.int64(L), bounds, didx, dval, dcount)
            dcount[:] = 0
        if np.array_equal(resume, bounds[1:] * Y):
            return


def peaks_host(Hk, code, radius, coords, values, H5):
    """Arg-max + centroid of each heatmap of ``Hk`` (B, L, X, Y, Z; ``H5`` the same heatmaps
    before the half-precision bit view) into ``coords`` (B*L, 3) and ``values`` (B*L,)."""
    N = coords.shape[0]
    X, Y, Z = (int(s) for s in Hk.shape[2:])
    vals = np.full((N, X), -np.inf)
    idx = np.full((N, X), -1, np.int64)
    if X * Y * Z and not _argmax_numpy(H5, vals, idx):  # an empty heatmap has no arg-max
        launch(row_maxima, Hk, np.int64(code), vals, idx, inputs=(0,))
    launch(peaks_from_rows, Hk, np.int64(code), vals, idx, np.int64(radius), coords, values, inputs=(0,))


def _argmax_numpy(H5, vals, idx):
    """Fill the row maxima from NumPy's SIMD ``argmax`` (first maximum, as the kernel) when
    every heatmap is a C-contiguous native-dtype block without NaN at its maximum; return
    False (nothing decided) otherwise, and the Numba row kernel does the work."""
    if H5.dtype.kind not in "fiu" or half_code(H5.dtype) != NATIVE:
        return False
    B, L, X, Y, Z = H5.shape
    found = []
    for b in range(B):
        for l in range(L):
            h = H5[b, l]
            if not h.flags.c_contiguous:
                return False
            i = int(np.argmax(h))
            v = h.reshape(-1)[i]
            if v != v:  # NaN: the kernel skips NaN, NumPy stops at it
                return False
            found.append((b * L + l, i, float(v)))
    for n, i, v in found:
        if v > -np.inf:
            x, r = divmod(i, Y * Z)
            vals[n, x] = v
            idx[n, x] = r
    return True
