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
:func:`numvox.votes._api.work_split` from a sampled vote count (:func:`vote_profile`),
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

import numpy as np
from llvmlite import ir
from numba import njit, prange, typeof, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .._shared.halfprec import load_f64
from ._splat import linear_cell_cpu

SEG = 2048  # voxels per line segment: bounds the per-thread scratch lists


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
def _channels(l, L, landmark_major):
    """The offset channels ``(x, y, z)`` of landmark ``l``."""
    if landmark_major:
        return 3 * l, 3 * l + 1, 3 * l + 2
    return l, L + l, 2 * L + l


# ------------------------------------------------------------------------ scatter ---------
@njit(parallel=True, cache=True)
def aggregate_cpu(P, pcode, O, ocode, thr_scan, dims, L, landmark_major, linear, out, bounds, resume,
                  didx, dval, dcount):
    """Scatter the votes of ``P`` / ``O`` (see the module docstring for their two forms)
    into ``out``, the flat C-order ``(B, L, X, Y, Z)`` float32 heatmaps.

    ``thr_scan``: the threshold in the scan's dtype (for float32 input the smallest float32
    >= the threshold, which decides every value exactly as the float64 threshold; for
    contiguous half-precision bits the ``uint16`` pair ``(lo, hi)``, see the module docstring); ``dims = (B, X, Y, Z)``; ``bounds``
    ``(nchunks + 1,)`` the chunks' source rows ``b * X + x``; ``resume[c]`` the first line
    ``(b * X + x) * Y + y`` chunk ``c`` still has to scan (updated); ``didx`` / ``dval``
    ``(nchunks, cap)`` the deferred lists and ``dcount`` their lengths (updated).
    """
    B, X, Y, Z = dims[0], dims[1], dims[2], dims[3]
    C = L + 1
    K = 3 * L
    fX, fY, fZ = np.float64(X), np.float64(Y), np.float64(Z)
    nchunks = bounds.size - 1
    cap = didx.shape[1]
    seg = min(Z, SEG)
    per_seg = seg * L * (8 if linear else 1)  # most entries one segment can add
    NB = (64 // C) * C  # 0 when C > 64: the plain scan below
    chan = np.uint64(0)  # mask of the landmark channels in a block
    jq = np.empty(64, np.int64)  # bit j of a block: voxel jq[j], landmark jl[j] (no divisions)
    jl = np.empty(64, np.int64)
    for j in range(NB):
        jq[j] = j // C
        jl[j] = j % C - 1
        if j % C:
            chan |= np.uint64(1) << np.uint64(j)
    for c in prange(nchunks):
        # A software pipeline over the units (line, segment) of the chunk.  In step t,
        # C adds the votes of unit t - 2 to ``out``, B turns the votes of unit t - 1 into
        # targets and A finds the votes of unit t
        # (prefetching their offsets), so every prefetch has a unit's work to arrive.
        # A-slot u % 2 (vz / vl / vw / vn) and T-slot u % 2 (tidx / tw / tk) hold unit u.
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
        lo = np.float64(bounds[c])
        hi = np.float64(bounds[c + 1])
        line_end = bounds[c + 1] * Y
        d = dcount[c]
        line = resume[c]
        z0 = 0
        slot = 0
        stopped = False
        while True:
            # C: add unit t - 2's owned votes
            if has_t[slot]:
                for i in range(tk[slot]):
                    out[tidx[slot, i]] += tw[slot, i]
                has_t[slot] = False
            # B: targets of unit t - 1
            ps = 1 - slot
            if has_a[ps]:
                pline = pl[ps]
                row = pline // Y
                y = pline - row * Y
                b = row // X
                x = row - b * X
                fb = np.float64(b)
                k = 0
                for i in range(vn[ps]):
                    z = vz[ps, i]
                    l = vl[ps, i]
                    cx, cy, cz = _channels(l, L, landmark_major)
                    p = vw[ps, i]
                    tx = x + _offset(O, ocode, pline, b, x, y, z, cx, K)
                    ty = y + _offset(O, ocode, pline, b, x, y, z, cy, K)
                    tz = z + _offset(O, ocode, pline, b, x, y, z, cz, K)
                    base = np.float64(b * L + l) * fX
                    if not linear:
                        # branch-free (a branch on offsets that miss the cache would stop
                        # the next votes' loads); indices computed exactly in float64
                        fx = np.floor(tx + 0.5)
                        fy = np.floor(ty + 0.5)
                        fz = np.floor(tz + 0.5)
                        ok = (fx >= 0.0) & (fx < fX) & (fy >= 0.0) & (fy < fY) & (fz >= 0.0) & (fz < fZ)
                        trow = fb * fX + fx
                        own = (trow >= lo) & (trow < hi)
                        f = ((base + fx) * fY + fy) * fZ + fz
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
                    if not (tx > -1.0 and tx < fX and ty > -1.0 and ty < fY and tz > -1.0 and tz < fZ):
                        continue  # NaN fails too
                    ix0, iy0, iz0, wx1, wy1, wz1 = linear_cell_cpu(tx, ty, tz)
                    for dx in range(2):
                        ix = ix0 + dx
                        if ix < 0 or ix >= X:
                            continue
                        trow = b * X + ix
                        own = trow >= bounds[c] and trow < bounds[c + 1]
                        wx = wx1 if dx else 1.0 - wx1
                        for dy in range(2):
                            iy = iy0 + dy
                            if iy < 0 or iy >= Y:
                                continue
                            wxy = wx * (wy1 if dy else 1.0 - wy1)
                            for dz in range(2):
                                iz = iz0 + dz
                                if iz < 0 or iz >= Z:
                                    continue
                                t = (((b * L + l) * X + ix) * Y + iy) * Z + iz
                                w = np.float32(p * (wxy * (wz1 if dz else 1.0 - wz1)))
                                if own:
                                    tidx[ps, k] = t
                                    tw[ps, k] = w
                                    k += 1
                                else:
                                    didx[c, d] = t
                                    dval[c, d] = w
                                    d += 1
                tk[ps] = k
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
                y = line - row * Y
                b = row // X
                x = row - b * X
                z1 = min(z0 + seg, Z)
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
                            cx, cy, cz = _channels(l, L, landmark_major)
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
                vn[slot] = nv

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
    :func:`numvox.votes._api.work_split` to balance the chunks of :func:`aggregate_cpu`."""
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
    """Reduce the row maxima to the arg-max of each heatmap and refine it by the weighted
    centroid (weights ``max(v, 0)``, NaN skipped) of the clipped window around it."""
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
        coords[n, 0] = np.nan
        coords[n, 1] = np.nan
        coords[n, 2] = np.nan
        if bx < 0:  # empty, or only NaN / -inf
            values[n] = 0.0
            continue
        values[n] = best
        if not (best > 0.0):
            continue
        by = idx[n, bx] // Z
        bz = idx[n, bx] - by * Z
        sw = 0.0
        sx = 0.0
        sy = 0.0
        sz = 0.0
        for x in range(max(bx - radius, 0), min(bx + radius + 1, X)):
            for y in range(max(by - radius, 0), min(by + radius + 1, Y)):
                for z in range(max(bz - radius, 0), min(bz + radius + 1, Z)):
                    v = load_f64(H, (b, l, x, y, z), code)
                    if v > 0.0:
                        sw += v
                        sx += v * x
                        sy += v * y
                        sz += v * z
        coords[n, 0] = sx / sw
        coords[n, 1] = sy / sw
        coords[n, 2] = sz / sw
