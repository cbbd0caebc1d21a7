"""CPU kernels of :func:`numvox.correlate_batch` (Numba, parallel).

Images reach the kernels as a flat 1-D buffer plus element strides of the *canonical* 6-D
view ``(N, C, D0, D1, D2, D3)`` (items padded in front with length-1 axes up to 4 spatial
axes; ``C == 1`` when ``channel_axis`` is None).  That way any strides, orders and
read-only inputs share one compiled signature per dtype, and 1-D to 4-D items share it too.
Filters arrive as a C-contiguous 6-D copy ``(K, C, s0, s1, s2, s3)`` in the output dtype
(the filter bank is small next to the images on this path).
"""

import math

import numpy as np
from numba import njit, prange

from numvox._shared.halfprec import load_f64


@njit(cache=True)
def scan_values(flat, code, base, shape, st):
    """``(nonfinite_count, max_abs)`` of the 6-D strided view (half precision decoded).

    Serial: one memory-bound pass, small next to the correlation itself, and a parallel loop
    here would more than double this kernel's compile time on a first call."""
    b = 0
    m = 0.0
    for n in range(shape[0]):
        for c in range(shape[1]):
            for i0 in range(shape[2]):
                for i1 in range(shape[3]):
                    for i2 in range(shape[4]):
                        q = base + n * st[0] + c * st[1] + i0 * st[2] + i1 * st[3] + i2 * st[4]
                        for i3 in range(shape[5]):
                            v = load_f64(flat, q + i3 * st[5], code)
                            if not math.isfinite(v):
                                b += 1
                            elif abs(v) > m:
                                m = abs(v)
    return b, m


@njit(parallel=True, cache=True)
def direct(img, icode, base, ishape, ist, filt, lo, oshape, kb, rows_per_chunk, nchunk, out, pval, pidx,
           reduce_flag, var, ssd, norm_flag, eps):
    """Direct cross-correlation of every image with every filter.

    ``out[n, k, o] = sum_{c, i} img[n, c, o + lo + i] * filt[k, c, i]`` (zero outside the image),
    for the output box ``oshape`` (4 ints); the image view is ``img[base + sum(index * ist)]``
    with shape ``ishape``.  Work items are (filter block, image, row chunk), filter blocks
    outermost so that one block of ``kb`` filters stays in cache while the images are swept.
    Each item accumulates ``kb`` output rows at once: an image row (zero-padded into a
    contiguous buffer) is read once per filter tap row and reused by the whole filter block;
    the innermost loop runs along the last axis, contiguously (SIMD-vectorisable).

    ``reduce_flag`` 0 writes ``out`` (N, K, O0, O1, O2, O3); 1 writes each row chunk's
    maximum and the first flat output index reaching it to ``pval``/``pidx`` (N, K, nchunk).
    ``norm_flag`` 1 divides by ``sqrt(var[n, o] * ssd[k])`` (0 where that is <= ``eps``).
    """
    N = ishape[0]
    C = ishape[1]
    D0, D1, D2, D3 = ishape[2], ishape[3], ishape[4], ishape[5]
    K = filt.shape[0]
    s0, s1, s2, s3 = filt.shape[2], filt.shape[3], filt.shape[4], filt.shape[5]
    O0, O1, O2, O3 = oshape[0], oshape[1], oshape[2], oshape[3]
    lo0, lo1, lo2, lo3 = lo[0], lo[1], lo[2], lo[3]
    R = O0 * O1 * O2
    nkb = (K + kb - 1) // kb
    L3 = O3 + s3 - 1
    ntask = nkb * N * nchunk
    zero = filt.dtype.type(0)
    for t in prange(ntask):
        kbi = t // (N * nchunk)
        rem = t - kbi * (N * nchunk)
        n = rem // nchunk
        ch = rem - n * nchunk
        k0 = kbi * kb
        nk = min(K, k0 + kb) - k0
        acc = np.empty((kb, O3), dtype=filt.dtype)
        row = np.empty(L3, dtype=filt.dtype)
        best = np.empty(kb, dtype=filt.dtype)
        bidx = np.zeros(kb, dtype=np.int64)
        for kk in range(nk):
            best[kk] = -np.inf
        r_start = ch * rows_per_chunk
        r_end = min(R, r_start + rows_per_chunk)
        for r in range(r_start, r_end):
            o0 = r // (O1 * O2)
            o1 = (r // O2) % O1
            o2 = r % O2
            acc[:nk, :] = zero
            for c in range(C):
                for i0 in range(s0):
                    y0 = o0 + lo0 + i0
                    if y0 < 0 or y0 >= D0:
                        continue
                    for i1 in range(s1):
                        y1 = o1 + lo1 + i1
                        if y1 < 0 or y1 >= D1:
                            continue
                        for i2 in range(s2):
                            y2 = o2 + lo2 + i2
                            if y2 < 0 or y2 >= D2:
                                continue
                            # the image row under this tap row, zero-padded, contiguous
                            q = base + n * ist[0] + c * ist[1] + y0 * ist[2] + y1 * ist[3] + y2 * ist[4]
                            for x in range(L3):
                                p = x + lo3
                                if p >= 0 and p < D3:
                                    row[x] = load_f64(img, q + p * ist[5], icode)
                                else:
                                    row[x] = zero
                            # four filters per pass: one row load feeds four accumulators
                            kk = 0
                            while kk + 4 <= nk:
                                for i3 in range(s3):
                                    wa = filt[k0 + kk, c, i0, i1, i2, i3]
                                    wb = filt[k0 + kk + 1, c, i0, i1, i2, i3]
                                    wc = filt[k0 + kk + 2, c, i0, i1, i2, i3]
                                    wd = filt[k0 + kk + 3, c, i0, i1, i2, i3]
                                    for o3 in range(O3):
                                        x = row[o3 + i3]
                                        acc[kk, o3] += wa * x
                                        acc[kk + 1, o3] += wb * x
                                        acc[kk + 2, o3] += wc * x
                                        acc[kk + 3, o3] += wd * x
                                kk += 4
                            while kk < nk:
                                for i3 in range(s3):
                                    wv = filt[k0 + kk, c, i0, i1, i2, i3]
                                    for o3 in range(O3):
                                        acc[kk, o3] += wv * row[o3 + i3]
                                kk += 1
            if not norm_flag and not reduce_flag:
                for kk in range(nk):
                    out[n, k0 + kk, o0, o1, o2, :] = acc[kk, :]
                continue
            for kk in range(nk):
                k = k0 + kk
                for o3 in range(O3):
                    v = acc[kk, o3]
                    if norm_flag:
                        d = math.sqrt(max(var[n, o0, o1, o2, o3], 0.0) * ssd[k])
                        v = v / d if d > eps else zero
                    if reduce_flag:
                        if v > best[kk]:
                            best[kk] = v
                            bidx[kk] = r * O3 + o3
                    else:
                        out[n, k, o0, o1, o2, o3] = v
        if reduce_flag:
            for kk in range(nk):
                pval[n, k0 + kk, ch] = best[kk]
                pidx[n, k0 + kk, ch] = bidx[kk]


def flat_view(view):
    """``(flat, base, strides)``: a read-only 1-D buffer spanning the NumPy ``view``'s memory,
    the element offset of ``view[0, ..., 0]`` in it and the element strides (int64 array),
    so that ``view[i] == flat[base + sum(i * strides)]``.  ``view`` must not be empty."""
    item = view.itemsize
    if any(st % item for st in view.strides):
        view = np.ascontiguousarray(view)
    st = np.array(view.strides, dtype=np.int64) // item
    shape = np.array(view.shape, dtype=np.int64)
    neg = int(np.where(st < 0, st * (shape - 1), 0).sum())  # offset of the lowest element
    pos = int(np.where(st > 0, st * (shape - 1), 0).sum())
    corner = tuple(int(n - 1) if s < 0 else 0 for n, s in zip(shape, st))
    low = view[tuple(slice(c, c + 1) for c in corner)]
    flat = np.lib.stride_tricks.as_strided(low, (pos - neg + 1,), (item,), writeable=False)
    return flat, np.int64(-neg), st


@njit(nogil=True, cache=True)
def task_products(FI, FF, loc, prod):
    """``prod[a * gb + b, o] = sum_i FI[a, o + loc + i] * FF[b, i]`` (terms with the plane index
    outside ``FI`` skipped): the spectra products of one task of the FFT path, ``ga`` images
    times ``gb`` filters, written into an engine's input buffer.  ``FI`` (ga, Sc, M), ``FF``
    (gb, sc, M), ``prod`` (>= ga * gb, Oc, M).  Runs without the GIL, one task per thread."""
    ga, Sc, M = FI.shape
    gb, sc = FF.shape[0], FF.shape[1]
    Oc = prod.shape[1]
    for a in range(ga):
        for b in range(gb):
            p = a * gb + b
            for o in range(Oc):
                first = True
                for i in range(sc):
                    c = o + loc + i
                    if c < 0 or c >= Sc:
                        continue
                    if first:
                        for m in range(M):
                            prod[p, o, m] = FI[a, c, m] * FF[b, i, m]
                        first = False
                    else:
                        for m in range(M):
                            prod[p, o, m] += FI[a, c, m] * FF[b, i, m]
                if first:
                    for m in range(M):
                        prod[p, o, m] = 0


@njit(nogil=True, cache=True, fastmath=True)
def task_max(r, keep, vals):
    """``vals[p] = max(r[p, :, :keep, :])`` for ``p < len(vals)``: the maximum of each pair's
    map in an engine's output ``r`` (G, A, R, B), whose real-transform axis ``R`` holds
    ``keep`` wanted outputs (the rest is the transform's padding).  With ``B == 1`` (the
    usual layout: the real transform along the last axis) 16 running maxima, one per lane,
    let the compiler vectorise the contiguous rows (about 3x faster than one running
    maximum).  Runs without the GIL."""
    A, B = r.shape[1], r.shape[3]
    lanes = np.empty(16, dtype=r.dtype)
    for p in range(vals.shape[0]):
        lanes[:] = r[p, 0, 0, 0]
        for a in range(A):
            if B == 1:
                j0 = 0
                while j0 + 16 <= keep:
                    for k in range(16):
                        v = r[p, a, j0 + k, 0]
                        lanes[k] = v if v > lanes[k] else lanes[k]
                    j0 += 16
                for j in range(j0, keep):
                    v = r[p, a, j, 0]
                    lanes[0] = v if v > lanes[0] else lanes[0]
            else:
                for j in range(keep):
                    for b in range(B):
                        v = r[p, a, j, b]
                        lanes[0] = v if v > lanes[0] else lanes[0]
        vals[p] = lanes.max()
