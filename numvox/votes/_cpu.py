"""CPU kernels for vote aggregation and heatmap peaks (Numba, ``parallel=True``).

Write conflicts of the scatter
------------------------------
A vote may land anywhere in the volume, so two source voxels handled by different threads
can hit the same target voxel.  The work is split into ``nchunks`` contiguous ranges of
source rows ``(b, x)`` times ``ngroups`` groups of landmarks; items of different landmark
groups never write the same heatmap, and a chunk writes straight into ``out`` for every
batch item it owns alone.  Only the batch item shared by consecutive chunks (there is one
such item per chunk boundary, and none when the chunks follow batch boundaries) goes
through a private buffer of one batch item's heatmaps, which is folded into ``out``
afterwards over the x-range that was actually written.  The private buffers are allocated
with ``np.zeros`` (pages are mapped lazily by the OS), and ``nchunks <= B + 1`` keeps them
within 1x the output size even when every page is touched.

Reading
-------
Each source row ``(b, x, y)`` is scanned twice: a tight, branch-free loop lists the
``(z, l)`` that pass the threshold (the only loop that touches every probability), then only
those votes read their three offsets, range-check the target in float64 (NaN and huge
values fail the check before any integer conversion) and splat it.

Every array is indexed with its own strides (C/F order, views, read-only inputs) and
half-precision inputs arrive as ``uint16`` bits decoded by ``load_f64``.
"""

import math
import threading

import numpy as np
from numba import njit, prange, typeof

from .._shared.halfprec import load_f64


_COMPILE_LOCK = threading.Lock()


def launch(kernel, *args, inputs=()):
    """Call ``kernel(*args)`` through one compiled signature per input dtype.

    The arrays at positions ``inputs`` are typed as read-only ``'A'``-layout arrays, so C,
    F, strided, writeable and read-only inputs share one compiled (and cached) kernel
    instead of one per combination; Numba converts the actual arguments to that signature
    (a safe conversion) once compiling new specialisations is switched off.
    """
    sig = tuple(
        typeof(a).copy(layout="A", readonly=True) if i in inputs else typeof(a) for i, a in enumerate(args)
    )
    with _COMPILE_LOCK:
        if sig not in kernel.overloads:
            kernel.disable_compile(False)
            try:
                kernel.compile(sig)
            finally:
                kernel.disable_compile(True)
    return kernel(*args)


@njit(inline="always", cache=True)
def _row_range(c, nchunks, B, X, by_batch):
    """Source rows ``[r0, r1)`` (row = b * X + x) of chunk ``c``."""
    if by_batch:
        return (c * B // nchunks) * X, ((c + 1) * B // nchunks) * X
    R = B * X
    return c * R // nchunks, (c + 1) * R // nchunks


@njit(parallel=True, cache=True)
def aggregate_cpu(P, pcode, O, ocode, thr, L, landmark_major, linear, out, priv, ranges, nchunks, ngroups, by_batch):
    """Scatter the votes of ``P`` (B, X, Y, Z, L+1) / ``O`` (B, X, Y, Z, 3L) into ``out``.

    ``out`` (B, L, X, Y, Z) float32 must be zero on entry; ``priv`` (nchunks-1, L, X, Y, Z)
    zero; ``ranges`` (nchunks, L, 2) int64 filled with (X, -1).
    """
    B, X, Y, Z = P.shape[0], P.shape[1], P.shape[2], P.shape[3]
    fX, fY, fZ = np.float64(X), np.float64(Y), np.float64(Z)
    for item in prange(nchunks * ngroups):
        c = item // ngroups
        g = item % ngroups
        l0 = g * L // ngroups
        l1 = (g + 1) * L // ngroups
        r0, r1 = _row_range(c, nchunks, B, X, by_batch)
        hits = np.empty(Z * (l1 - l0), np.int64)
        for r in range(r0, r1):
            b = r // X
            x = r - b * X
            private = c > 0 and b * X < r0
            if private:
                dst = priv[c - 1]
            else:
                dst = out[b]
            for y in range(Y):
                prow = P[b, x, y]  # (Z, L+1) and (Z, 3L) rows: 2-D indexing in the hot loops
                orow = O[b, x, y]
                # Pass 1, tight and branch-free: the (z, l) of the row's votes (most rows
                # of real outputs hold none).
                k = 0
                for z in range(Z):
                    for l in range(l0, l1):
                        hits[k] = z * L + l
                        k += load_f64(prow, (z, l + 1), pcode) >= thr  # NaN never votes
                # Pass 2: the votes only.
                for h in range(k):
                    j = hits[h]
                    z = j // L
                    l = j - z * L
                    p = load_f64(prow, (z, l + 1), pcode)
                    if landmark_major:
                        ox = load_f64(orow, (z, 3 * l), ocode)
                        oy = load_f64(orow, (z, 3 * l + 1), ocode)
                        oz = load_f64(orow, (z, 3 * l + 2), ocode)
                    else:
                        ox = load_f64(orow, (z, l), ocode)
                        oy = load_f64(orow, (z, L + l), ocode)
                        oz = load_f64(orow, (z, 2 * L + l), ocode)
                    tx = x + ox
                    ty = y + oy
                    tz = z + oz
                    # Range checks in float first (NaN fails them), integers after.
                    if not (tx > -1.0 and tx < fX and ty > -1.0 and ty < fY and tz > -1.0 and tz < fZ):
                        continue
                    if not linear:
                        ix = int(math.floor(tx + 0.5))
                        iy = int(math.floor(ty + 0.5))
                        iz = int(math.floor(tz + 0.5))
                        if ix < 0 or ix >= X or iy < 0 or iy >= Y or iz < 0 or iz >= Z:
                            continue
                        dst[l, ix, iy, iz] += np.float32(p)
                        if private:
                            if ix < ranges[c, l, 0]:
                                ranges[c, l, 0] = ix
                            if ix > ranges[c, l, 1]:
                                ranges[c, l, 1] = ix
                    else:
                        fx0 = math.floor(tx)
                        fy0 = math.floor(ty)
                        fz0 = math.floor(tz)
                        wx1 = tx - fx0
                        wy1 = ty - fy0
                        wz1 = tz - fz0
                        ix0 = int(fx0)
                        iy0 = int(fy0)
                        iz0 = int(fz0)
                        for dx in range(2):
                            ix = ix0 + dx
                            if ix < 0 or ix >= X:
                                continue
                            wx = wx1 if dx else 1.0 - wx1
                            if private:
                                if ix < ranges[c, l, 0]:
                                    ranges[c, l, 0] = ix
                                if ix > ranges[c, l, 1]:
                                    ranges[c, l, 1] = ix
                            for dy in range(2):
                                iy = iy0 + dy
                                if iy < 0 or iy >= Y:
                                    continue
                                wxy = wx * (wy1 if dy else 1.0 - wy1)
                                for dz in range(2):
                                    iz = iz0 + dz
                                    if iz < 0 or iz >= Z:
                                        continue
                                    w = wxy * (wz1 if dz else 1.0 - wz1)
                                    dst[l, ix, iy, iz] += np.float32(p * w)


@njit(parallel=True, cache=True)
def fold_private(out, priv, ranges, nchunks, X, Y, Z):
    """Add each private buffer into ``out`` over the x-range its chunk wrote."""
    L = out.shape[1]
    B = out.shape[0]
    for c in range(1, nchunks):
        b = (c * (B * X) // nchunks) // X
        for l in range(L):
            x0 = ranges[c, l, 0]
            x1 = ranges[c, l, 1]
            if x1 < x0:
                continue
            for x in prange(x0, x1 + 1):
                for y in range(Y):
                    for z in range(Z):
                        out[b, l, x, y, z] += priv[c - 1, l, x, y, z]


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
