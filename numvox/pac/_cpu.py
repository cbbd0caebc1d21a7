"""CPU kernels of the pixel-adaptive convolution (fused: no im2col buffers).

All kernels work on the 3-D embedding of the problem (a 2-D call is a 3-D call with a
leading spatial axis of size 1):

- ``x``: ``(N, D, H, W, C)`` kernel view (any strides), ``xc`` its half-precision code
- ``g``: ``(N, D, H, W, F)`` guide kernel view, ``gc`` its code
- ``w``: ``(T, C, O)`` weight, C-contiguous, in the compute dtype (``T = kd*kh*kw``)
- ``ks``, ``st``, ``lo``, ``dl``: int64 arrays of 3 (kernel size, stride, low padding, dilation)
- ``kp``: the kernel kind (:mod:`._kinds`); the forward kernel also runs the internal kind of
  ``dK/dlambda`` (for the alpha/lambda gradients of :mod:`._params`), the backward kernel
  only the public kinds

Each output window's adaptive kernel (``F*T`` work) is computed once and reused for all
``C*O`` channel pairs.  Per output row, the guide rows the windows touch are copied into a
per-thread buffer with pixels on the inner axis (``kd*kh x F x W'``) and the kernels
``K[t, j]`` are computed with unit-stride loops over the windows ``j`` (float32: a
vectorised polynomial exp, relative error ~1e-7; float64: ``math.exp``).

Forward, unit stride along the row (the common case): scale after the GEMM.  For a group
of up to ``L`` output rows of a plane, each window row ``(a, b)`` of the filter meets the
same input rows for every window, so one GEMM per window row multiplies the ``kw`` taps of
that row (``kw*O x C``) with all those input pixels (``C x L*W``); the output is the
K-weighted sum of shifted rows of that product, with the windows on the vectorised axis.
The GEMMs do the plain convolution's multiply-adds, no more; the adaptation adds ``T*O``
multiply-adds per window.  Other strides: blocks of ``PB = 32`` windows whose K-weighted
inputs are gathered into a ``PB x T*C`` matrix, applied with one small GEMM.  No im2col
buffer of the whole input is ever built: extra memory is ``O(threads * (L*W*(C + kw*O) +
L*T*W + kd*kh*F*W))`` plus per-thread ``T*C*O`` weight-gradient partials (backward).
Inputs are compiled as C-contiguous arrays when they are, else with any strides.
"""

import math

import numpy as np
from numba import from_dtype, get_num_threads, get_thread_id, njit, prange, typeof, types

from .._shared.halfprec import load_f64
from ._taps_cpu import tap_delta, tap_slope, tap_value

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@njit(inline="always", cache=True)
def _guide_rows(g, gc, n, z0, y0, ks, dl, lo2, D, H, W, F, gb, vb):
    """Copy the guide rows of a window row band into ``gb[r, f, xi]`` (``r`` over the
    ``kd*kh`` window rows, buffer column ``xi = x + lo2``), zero outside the image, and set
    ``vb[r, xi]`` to 0 inside the image, +inf outside (added to the squared distance, it
    makes the kernel 0 there).  Pixels on the inner axis."""
    Wp = gb.shape[2]
    r = 0
    for a in range(ks[0]):
        z = z0 + a * dl[0]
        for b in range(ks[1]):
            y = y0 + b * dl[1]
            rin = 0 <= z < D and 0 <= y < H
            for xi in range(Wp):
                xx = xi - lo2
                if rin and 0 <= xx < W:
                    vb[r, xi] = 0.0
                    grow = g[n, z, y, xx]
                    for f in range(F):
                        gb[r, f, xi] = load_f64(grow, f, gc)
                else:
                    vb[r, xi] = np.inf
                    for f in range(F):
                        gb[r, f, xi] = 0.0
            r += 1


@njit(inline="always", cache=True)
def _block_kernel(gb, vb, ks, dl, s2, ow0, nb, F, fast, Kb, dist, ei):
    """``Kb[t, j]``: Gaussian adaptive kernel of tap ``t`` for the window of output column
    ``ow0 + j`` (``j < nb``), 0 for taps outside the image, in ``Kb``'s dtype.  ``fast``:
    float32 with a vectorisable exp (Cody-Waite split, degree-6 polynomial, rel. error
    ~2e-7); otherwise ``math.exp``."""
    kw = ks[2]
    rc = (ks[0] // 2) * ks[1] + ks[1] // 2
    xcen = ow0 * s2 + (kw // 2) * dl[2]
    R = ks[0] * ks[1]
    t = 0
    for r in range(R):
        for c in range(kw):
            xq = ow0 * s2 + c * dl[2]
            if s2 == 1:  # unit-stride row slices: vectorised
                pen = vb[r, xq:xq + nb]
                for j in range(nb):
                    dist[j] = pen[j]
                for f in range(F):
                    gcen = gb[rc, f, xcen:xcen + nb]
                    gq = gb[r, f, xq:xq + nb]
                    for j in range(nb):
                        d = gcen[j] - gq[j]
                        dist[j] += d * d
            else:
                for j in range(nb):
                    dist[j] = vb[r, xq + j * s2]
                for f in range(F):
                    for j in range(nb):
                        d = gb[rc, f, xcen + j * s2] - gb[r, f, xq + j * s2]
                        dist[j] += d * d
            if fast:
                ef = ei.view(np.float32)
                for j in range(nb):
                    # exp(-dist/2) = 2^(yv), yv = -dist/2*log2(e) in [-126, 0] (masked below)
                    yp = np.float32(126.0) - dist[j] * np.float32(0.5 * LOG2E)
                    ok = yp >= np.float32(0.0)
                    yp = max(yp, np.float32(0.0))
                    m = np.int32(yp + np.float32(0.5))
                    u = (yp - np.float32(m)) * np.float32(LN2)  # |u| <= ln2/2
                    p = np.float32(1.0) + u * (np.float32(1.0) + u * (np.float32(1.0 / 2) + u * (
                        np.float32(1.0 / 6) + u * (np.float32(1.0 / 24) + u * (np.float32(1.0 / 120) + u * np.float32(
                            1.0 / 720))))))
                    dist[j] = p if ok else np.float32(0.0)
                    ei[j] = (m + np.int32(1)) << np.int32(23)  # 2^(m - 126)
                Kt = Kb[t, :nb]
                for j in range(nb):
                    Kt[j] = dist[j] * ef[j]
            else:
                for j in range(nb):
                    Kb[t, j] = math.exp(-0.5 * dist[j])
            t += 1


@njit(inline="always", cache=True)
def _block_kernel_kinds(gb, vb, ks, dl, s2, ow0, nb, F, kp, Kb, dist):
    """:func:`_block_kernel` for any kernel kind ``kp`` (:mod:`._kinds`): scalar
    ``tap_value`` per window and tap, 0 for taps outside the image."""
    kw = ks[2]
    rc = (ks[0] // 2) * ks[1] + ks[1] // 2
    xcen = ow0 * s2 + (kw // 2) * dl[2]
    t = 0
    for r in range(ks[0] * ks[1]):
        for c in range(kw):
            xq = ow0 * s2 + c * dl[2]
            for j in range(nb):
                dist[j] = 0.0
            for f in range(F):
                for j in range(nb):
                    d = tap_delta(gb[r, f, xq + j * s2], gb[rc, f, xcen + j * s2], kp)
                    dist[j] += d * d
            for j in range(nb):
                Kb[t, j] = tap_value(dist[j], kp) if vb[r, xq + j * s2] == 0.0 else 0.0
            t += 1


@njit(inline="always", cache=True)
def _any_kernel(gb, vb, ks, dl, s2, ow0, nb, F, fast, kp, Kb, dist, ei):
    """A block's kernels ``Kb`` of kind ``kp``: the vectorised Gaussian or the general path."""
    if kp[0] == 0.0:
        _block_kernel(gb, vb, ks, dl, s2, ow0, nb, F, fast, Kb, dist, ei)
    else:
        _block_kernel_kinds(gb, vb, ks, dl, s2, ow0, nb, F, kp, Kb, dist)


PB = 32  # output positions per block (the GEMM's M)


@njit(inline="always", cache=True)
def _buffer_width(W, Wo, ks, st, lo, dl):
    """Columns of the guide-row buffer (:func:`_guide_rows`): the image row after the low
    padding, or the span of the output row's windows if that reaches further."""
    return max(W + lo[2], (Wo - 1) * st[2] + (ks[2] - 1) * dl[2] + 1)


@njit(inline="always", cache=True)
def _window_norms(Kb, T, nb, normalize, inv):
    """``inv[j]`` for the ``nb`` windows of a block: with ``normalize`` one over the sum of
    window ``j``'s kernel values ``Kb[:, j]`` (0 where that sum is 0), else 1."""
    for j in range(nb):
        inv[j] = 0.0 if normalize else 1.0
    if normalize:
        for t in range(T):
            for j in range(nb):
                inv[j] += Kb[t, j]
        for j in range(nb):
            inv[j] = 1.0 / inv[j] if inv[j] != 0.0 else 0.0


@njit(inline="always", cache=True)
def _gather_window(x, xc, n, z0, y0, x0, ks, dl, Kb, j, iv, weighted, Z):
    """Row ``Z[j]`` (``T*C`` values, tap-major): the input window whose first tap is at
    ``(z0, y0, x0)``, 0 outside the image; with ``weighted`` each tap's channels are scaled
    by its normalised kernel value ``Kb[t, j] * iv``."""
    D, H, W, C = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    t = 0
    for a in range(ks[0]):
        z = z0 + a * dl[0]
        for bb in range(ks[1]):
            y = y0 + bb * dl[1]
            rin = 0 <= z < D and 0 <= y < H
            for cc in range(ks[2]):
                xx = x0 + cc * dl[2]
                zrow = Z[j, t * C:(t + 1) * C]
                if rin and 0 <= xx < W:
                    xrow = x[n, z, y, xx]
                    if weighted:
                        kt = Kb[t, j] * iv
                        if xc == 0:
                            for c in range(C):
                                zrow[c] = kt * xrow[c]
                        else:
                            for c in range(C):
                                zrow[c] = kt * load_f64(xrow, c, xc)
                    elif xc == 0:
                        for c in range(C):
                            zrow[c] = xrow[c]
                    else:
                        for c in range(C):
                            zrow[c] = load_f64(xrow, c, xc)
                else:
                    for c in range(C):
                        zrow[c] = 0.0
                t += 1


@njit(inline="always", cache=True)
def _input_rows(x, xc, n, z, y0, ystep, i0, i1, xb):
    """``xb[(i - i0)*W + xx] = x[n, z, y0 + i*ystep, xx]`` (all channels, in ``xb``'s dtype)
    for ``i0 <= i < i1``: the input rows, one after the other, pixels by channels."""
    W, C = x.shape[3], x.shape[4]
    for i in range(i0, i1):
        base = (i - i0) * W
        for xx in range(W):
            xrow = x[n, z, y0 + i * ystep, xx]
            brow = xb[base + xx]
            if xc == 0:
                for c in range(C):
                    brow[c] = xrow[c]
            else:
                for c in range(C):
                    brow[c] = load_f64(xrow, c, xc)


@njit(cache=True)
def _group_by_products(x, xc, n, z0, oh0, L, ks, st, lo, dl, wtt, xb, Kg, acc):
    """``acc[i, o, j] = sum_t Kg[i, t, j] * (W[t]^T x[q_t(i, j)])[o]`` for the windows of the
    ``L`` output rows ``oh0 .. oh0+L-1`` of one plane (unit stride along the row).

    Per window row ``r`` (over ``kd*kh``) one GEMM applies every tap of that row at once to
    every pixel of the input rows it reads inside the image, side by side:
    ``P[c*O + o, (i - i0)*W + xx] = (W[t]^T x[xx])[o]`` for tap column ``c``.  Window ``j`` of
    row ``i`` reads pixel ``xx = j + c*dl2 - lo2`` there, so the K-weighted sum runs along
    rows of ``P`` with the windows on the inner, vectorised axis (scale after the GEMM);
    taps outside the image are skipped (their ``K`` is 0).  ``xb`` is ``L*W x C`` scratch."""
    D, H, W = x.shape[1], x.shape[2], x.shape[3]
    kw = ks[2]
    O, Wo = acc.shape[1], acc.shape[2]
    for i in range(L):
        for o in range(O):
            for j in range(Wo):
                acc[i, o, j] = 0.0
    r = 0
    for a in range(ks[0]):
        z = z0 + a * dl[0]
        for b in range(ks[1]):
            ylo = oh0 * st[1] - lo[1] + b * dl[1]  # input row of output row oh0 (i = 0)
            i0 = 0 if ylo >= 0 else (st[1] - 1 - ylo) // st[1]
            i1 = min(L, (H - 1 - ylo) // st[1] + 1) if ylo < H else 0
            if 0 <= z < D and i0 < i1:
                _input_rows(x, xc, n, z, ylo, st[1], i0, i1, xb)
                P = np.dot(wtt[r], xb[:(i1 - i0) * W].T)  # (kw*O, C) @ (C, rows*W): one GEMM
                for i in range(i0, i1):
                    for c in range(kw):
                        sh = c * dl[2] - lo[2]  # window j reads pixel j + sh
                        jlo, jhi = max(0, -sh), min(Wo, W - sh)
                        if jlo >= jhi:
                            continue
                        kt = Kg[i, r * kw + c, jlo:jhi]
                        q0 = (i - i0) * W + sh
                        for o in range(O):
                            prow = P[c * O + o, q0 + jlo:q0 + jhi]
                            arow = acc[i, o, jlo:jhi]
                            for j in range(jhi - jlo):
                                arow[j] += kt[j] * prow[j]
            r += 1


def _pac_forward(x, xc, g, gc, w, wtt, b, has_bias, ks, st, lo, dl, kp, normalize, nthreads, out):
    N, W, C = x.shape[0], x.shape[3], x.shape[4]
    F = g.shape[4]
    T, _, O = w.shape
    Do, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    Wp = _buffer_width(W, Wo, ks, st, lo, dl)
    unit = st[2] == 1
    # unit row stride: groups of L output rows of a plane; the kernels of each whole row,
    # then per window row one GEMM over the (up to) L input rows it reads (scale after the GEMM).
    # Otherwise one row at a time, blocks of PB windows whose K-weighted inputs are gathered.
    L = min(Ho, max(1, 1024 // max(W, 1))) if unit else 1
    nk = max(Wo, 1) if unit else PB
    per_plane = (Ho + L - 1) // L
    groups = N * Do * per_plane
    chunks = min(groups, 4 * nthreads)  # a few chunks per thread, each allocating its scratch once
    for ch in prange(chunks):
        gb = np.empty((ks[0] * ks[1], F, Wp), out.dtype)
        vb = np.empty((ks[0] * ks[1], Wp), out.dtype)
        Kg = np.empty((L, T, nk), out.dtype)
        dist = np.empty(nk, out.dtype)
        ei = np.empty(nk, np.int32)
        inv = np.empty(nk, out.dtype)
        xb = np.empty((L * W if unit else 0, C), out.dtype)
        acc = np.empty((L if unit else 0, O, Wo), out.dtype)
        Z = np.empty((0 if unit else PB, T * C), out.dtype)
        for grp in range(ch * groups // chunks, (ch + 1) * groups // chunks):
            n = grp // (Do * per_plane)
            od = (grp // per_plane) % Do
            oh0 = (grp % per_plane) * L
            Lg = min(L, Ho - oh0)
            z0 = od * st[0] - lo[0]
            for i in range(Lg):
                _pac_row(x, xc, g, gc, w, b, has_bias, ks, st, lo, dl, kp, normalize, n, od, oh0 + i, z0, unit,
                         gb, vb, Kg[i], dist, ei, inv, Z, out)
            if unit:
                _group_by_products(x, xc, n, z0, oh0, Lg, ks, st, lo, dl, wtt, xb, Kg, acc)
                for i in range(Lg):
                    for j in range(Wo):
                        orow = out[n, od, oh0 + i, j]
                        for o in range(O):
                            orow[o] = acc[i, o, j] + b[o] if has_bias else acc[i, o, j]


@njit(cache=True)
def _pac_row(x, xc, g, gc, w, b, has_bias, ks, st, lo, dl, kp, normalize, n, od, oh, z0, unit, gb, vb, Kb,
             dist, ei, inv, Z, out):
    """The kernels of output row ``(n, od, oh)``: with ``unit`` (unit row stride) the
    normalised kernels of the whole row into ``Kb`` (applied later by
    :func:`_group_by_products`); otherwise blocks of ``PB`` windows, each applied at once
    with one GEMM of its gathered K-weighted inputs, writing ``out``'s row."""
    D, H, W = g.shape[1], g.shape[2], g.shape[3]
    F = g.shape[4]
    T, C, O = w.shape
    Wo = out.shape[3]
    nk = Kb.shape[1]
    y0 = oh * st[1] - lo[1]
    _guide_rows(g, gc, n, z0, y0, ks, dl, lo[2], D, H, W, F, gb, vb)
    for ow0 in range(0, Wo, nk):
        nb = min(nk, Wo - ow0)
        _any_kernel(gb, vb, ks, dl, st[2], ow0, nb, F, out.itemsize == 4, kp, Kb, dist, ei)
        _window_norms(Kb, T, nb, normalize, inv)
        if unit:
            if normalize:
                for t in range(T):
                    for j in range(nb):
                        Kb[t, j] *= inv[j]
            continue
        for j in range(nb):
            _gather_window(x, xc, n, z0, y0, (ow0 + j) * st[2] - lo[2], ks, dl, Kb, j, inv[j], True, Z)
        res = np.dot(Z[:nb], w.reshape(T * C, O))  # (nb, T*C) @ (T*C, O): a small GEMM
        for j in range(nb):
            orow = out[n, od, oh, ow0 + j]
            for o in range(O):
                orow[o] = res[j, o] + b[o] if has_bias else res[j, o]


# -- backward pieces (one window j of a block each) ---------------------------------------
@njit(inline="always", cache=True)
def _grad_x_window(gx, n, z0, y0, x0, ks, dl, C, Kb, j, iv, V, X, Gt, kbuf):
    """Scatter window ``j``'s input gradient ``K_t * iv * V[j]`` into ``gx``, set ``Gt[t]``
    to ``dL/dK_t`` of the normalised kernel (``sum_c x * V``) and turn ``X[j]`` into the
    K-weighted input (for the weight gradient).  Taps outside the image have ``K = 0``."""
    t = 0
    for a in range(ks[0]):
        z = z0 + a * dl[0]
        for bb in range(ks[1]):
            y = y0 + bb * dl[1]
            for cc in range(ks[2]):
                xx = x0 + cc * dl[2]
                kt = Kb[t, j]
                gsum = 0.0
                if kt != 0.0:
                    kbuf[0] = kt * iv
                    kn = kbuf[0]  # in the compute dtype
                    gxrow = gx[n, z, y, xx]
                    vr = V[j, t * C:(t + 1) * C]
                    xr = X[j, t * C:(t + 1) * C]
                    for c in range(C):
                        v = vr[c]
                        gxrow[c] += kn * v
                        gsum += xr[c] * v
                        xr[c] *= kn
                else:  # K underflowed to 0 inside the image
                    for c in range(C):
                        X[j, t * C + c] = 0.0
                Gt[t] = gsum
                t += 1


@njit(inline="always", cache=True)
def _unnormalised_grad(Kb, j, iv, T, Gt):
    """``Gt``: from ``dL/dK`` of the normalised kernel ``K * iv`` to ``dL/dK`` of the raw
    kernel (the normaliser ``iv = 1 / sum K`` depends on every tap)."""
    m = 0.0
    for t in range(T):
        m += Kb[t, j] * iv * Gt[t]
    for t in range(T):
        Gt[t] = (Gt[t] - m) * iv


@njit(inline="always", cache=True)
def _tap_distance(g, gc, gb, n, z, y, xx, r, xi, fc, F, asym):
    """Summed squared (rectified if ``asym``) difference ``f_q - f_c`` of a tap inside the
    image: guide row from ``g`` when contiguous, else from the guide-row buffer ``gb``."""
    s = 0.0
    for f in range(F):
        d = (g[n, z, y, xx, f] if gc == 0 else gb[r, f, xi]) - fc[f]
        if asym and d < 0.0:
            d = 0.0 * d
        s += d * d
    return s


@njit(inline="always", cache=True)
def _scatter_row(frow, ggrow, cacc, fc, coef, F, asym):
    """``ggrow[f] += coef * Delta_f`` and ``cacc[f] +=`` the same, ``Delta = frow - fc``
    (rectified if ``asym``; the plain loop otherwise, as the Gaussian needs)."""
    if asym:
        for f in range(F):
            dlt = coef * max(frow[f] - fc[f], 0.0)
            ggrow[f] += dlt
            cacc[f] += dlt
    else:
        for f in range(F):
            dlt = coef * (frow[f] - fc[f])
            ggrow[f] += dlt
            cacc[f] += dlt


@njit(inline="always", cache=True)
def _kind_coefs(g, gc, gb, n, z0, y0, x0, ks, dl, lo2, F, kp, Kb, j, Gt, fc):
    """``Gt[t] *= 2 dK/ds`` of tap ``t`` (:func:`tap_slope`) for a non-Gaussian kind, 0 for
    taps outside the image."""
    D, H, W = g.shape[1], g.shape[2], g.shape[3]
    asym = kp[3] != 0.0
    t = 0
    for a in range(ks[0]):
        z = z0 + a * dl[0]
        for bb in range(ks[1]):
            y = y0 + bb * dl[1]
            for cc in range(ks[2]):
                xx = x0 + cc * dl[2]
                if 0 <= z < D and 0 <= y < H and 0 <= xx < W:
                    s = _tap_distance(g, gc, gb, n, z, y, xx, a * ks[1] + bb, xx + lo2, fc, F, asym)
                    Gt[t] *= tap_slope(s, Kb[t, j], kp)
                else:
                    Gt[t] = 0.0
                t += 1


@njit(inline="always", cache=True)
def _grad_guide_window(g, gc, gg, gb, n, z0, y0, x0, xcen, ks, dl, lo2, F, kp, Kb, j, Gt, fc, cacc):
    """Scatter window ``j``'s guide gradient into ``gg`` from ``Gt`` (``dL/dK``, overwritten):
    ``dK/df_q = slope * Delta`` at each tap ``q`` (:func:`tap_slope`; Gaussian:
    ``-K (f_q - f_c)``) and the opposite sum at the window centre (if inside the image).
    ``xcen`` is the centre's column in the guide-row buffer ``gb``; taps outside the image
    are skipped."""
    D, H, W = g.shape[1], g.shape[2], g.shape[3]
    rc = (ks[0] // 2) * ks[1] + ks[1] // 2
    asym = kp[3] != 0.0
    for f in range(F):
        fc[f] = gb[rc, f, xcen]  # 0 outside the image
        cacc[f] = 0.0
    if kp[0] == 0.0:  # Gaussian: 2 dK/ds = -K (0 outside the image)
        for t in range(Gt.shape[0]):
            Gt[t] = -Gt[t] * Kb[t, j]
    else:
        _kind_coefs(g, gc, gb, n, z0, y0, x0, ks, dl, lo2, F, kp, Kb, j, Gt, fc)
    t = 0
    for a in range(ks[0]):
        z = z0 + a * dl[0]
        for bb in range(ks[1]):
            y = y0 + bb * dl[1]
            r = a * ks[1] + bb
            for cc in range(ks[2]):
                xx = x0 + cc * dl[2]
                xi = xx + lo2
                coef = Gt[t]
                if coef != 0.0 and gc == 0:  # contiguous guide row
                    _scatter_row(g[n, z, y, xx], gg[n, z, y, xx], cacc, fc, coef, F, asym)
                elif coef != 0.0:  # the guide-row buffer
                    _scatter_row(gb[r, :, xi], gg[n, z, y, xx], cacc, fc, coef, F, asym)
                t += 1
    cz = z0 + (ks[0] // 2) * dl[0]
    cy = y0 + (ks[1] // 2) * dl[1]
    cx = x0 + (ks[2] // 2) * dl[2]
    if 0 <= cz < D and 0 <= cy < H and 0 <= cx < W:
        for f in range(F):
            gg[n, cz, cy, cx, f] -= cacc[f]


@njit(inline="always", cache=True)
def scatter_bands(k, dil, stride, Ho, nthreads):
    """``(L, bands)``: output rows in bands of ``L >= P`` rows, ``P*stride`` more than a
    window's extent ``(k-1)*dil + 1`` along the row axis.  Even bands run in parallel, then
    odd bands, so that no two concurrent bands scatter into the same input rows."""
    P = ((k - 1) * dil) // stride + 1
    L = max(P, (Ho + 4 * nthreads - 1) // (4 * nthreads))
    return L, (Ho + L - 1) // L


@njit(inline="always", cache=True)
def band_count(bands, ph):
    """Bands of phase ``ph`` (0: even bands, 1: odd bands) per image."""
    return (bands - ph + 1) // 2


@njit(inline="always", cache=True)
def band_item(item, ph, bands):
    """Image ``n`` and band of parallel work item ``item`` of phase ``ph``."""
    per_n = band_count(bands, ph)
    return item // per_n, ph + 2 * (item % per_n)


def _pac_backward(go, gu, x, xc, g, gc, w, ks, st, lo, dl, kp, normalize, nthreads, gx, gg, gw_part, gb_part):
    """Fused backward.  ``gu`` is grad_out's half code.  Writes ``gx`` (N,D,H,W,C), ``gg``
    (N,D,H,W,F) (both zeroed by the caller), and per-thread partial sums ``gw_part``
    (threads, T, C, O) and ``gb_part`` (threads, O), zeroed by the caller.

    Blocks of up to ``PB`` output positions of a row are processed together: their input
    windows are gathered (``PB x T*C`` values per thread) so that ``W^T g`` and the weight
    gradient are small GEMMs.  The scatter into ``gx``/``gg`` is race-free: output rows
    (axis H) are split into bands of ``L >= P`` rows with ``P*stride`` more than a window's
    extent; even bands run in parallel, then odd bands, so concurrent bands never touch the
    same input rows."""
    N, D, H, W, C = x.shape
    F = g.shape[4]
    T, _, O = w.shape
    TC = T * C
    w2 = w.reshape(TC, O)
    Do, Ho, Wo = go.shape[1], go.shape[2], go.shape[3]
    fast = gx.itemsize == 4  # float32: vectorised fast exp
    s2 = st[2]
    lo2 = lo[2]
    Wp = _buffer_width(W, Wo, ks, st, lo, dl)
    R = ks[0] * ks[1]
    L, bands = scatter_bands(ks[1], dl[1], st[1], Ho, nthreads)
    for ph in range(2):
        for item in prange(N * band_count(bands, ph)):
            n, band = band_item(item, ph, bands)
            tid = get_thread_id()
            gw2 = gw_part[tid].reshape(TC, O)
            gb = np.empty((R, F, Wp), gx.dtype)
            vb = np.empty((R, Wp), gx.dtype)
            Kb = np.empty((T, PB), gx.dtype)
            dist = np.empty(PB, gx.dtype)
            ei = np.empty(PB, np.int32)
            inv = np.empty(PB, np.float64)
            fc = np.empty(F, np.float64)
            X = np.empty((PB, TC), gx.dtype)
            Gv = np.empty((PB, O), gx.dtype)
            Gt = np.empty(T, np.float64)
            kbuf = np.empty(1, gx.dtype)
            cacc = np.empty(F, np.float64)
            for oh in range(band * L, min(Ho, (band + 1) * L)):
                y0 = oh * st[1] - lo[1]
                for od in range(Do):
                    z0 = od * st[0] - lo[0]
                    _guide_rows(g, gc, n, z0, y0, ks, dl, lo2, D, H, W, F, gb, vb)
                    for ow0 in range(0, Wo, PB):
                        nb = min(PB, Wo - ow0)
                        # kernels, grad_out and input windows of the block
                        _any_kernel(gb, vb, ks, dl, s2, ow0, nb, F, fast, kp, Kb, dist, ei)
                        _window_norms(Kb, T, nb, normalize, inv)
                        for j in range(nb):
                            for o in range(O):
                                gval = load_f64(go, (n, od, oh, ow0 + j, o), gu)
                                Gv[j, o] = gval
                                gb_part[tid, o] += gval
                            _gather_window(x, xc, n, z0, y0, (ow0 + j) * s2 - lo2, ks, dl, Kb, j, 1.0, False, X)
                        V = np.dot(Gv[:nb], w2.T)  # (nb, T*C): sum_o W[t, c, o] g[o]
                        for j in range(nb):
                            x0 = (ow0 + j) * s2 - lo2
                            iv = inv[j]
                            _grad_x_window(gx, n, z0, y0, x0, ks, dl, C, Kb, j, iv, V, X, Gt, kbuf)
                            if normalize:
                                _unnormalised_grad(Kb, j, iv, T, Gt)
                            xcen = (ow0 + j) * s2 + (ks[2] // 2) * dl[2]  # guide-row buffer column
                            _grad_guide_window(g, gc, gg, gb, n, z0, y0, x0, xcen, ks, dl, lo2, F, kp, Kb, j, Gt,
                                               fc, cacc)
                        gw2 += np.dot(X[:nb].T, Gv[:nb])  # (T*C, O): sum_j K_t x[q, c] g[o]


def _count_nonfinite(a, code):
    """Number of NaN/inf entries of a 5-D kernel view (any strides).  Serial: one cheap pass,
    no parallel-region start-up."""
    n0, n1, n2, n3, n4 = a.shape
    total = 0
    for r in range(n0 * n1):
        i = r // n1
        j = r % n1
        bad = 0
        for k in range(n2):
            for m in range(n3):
                for c in range(n4):
                    v = load_f64(a, (i, j, k, m, c), code)
                    if not math.isfinite(v):
                        bad += 1
        total += bad
    return total


def thread_count():
    return get_num_threads()


# -- one compiled specialisation per dtype combination ----------------------------------
# Numba would compile a new version for every layout (C/F/A) and writeability of the input
# arrays; these kernels are large, so each is compiled for read-only 'A'-layout inputs
# (any strides) and C-contiguous small parameters / outputs only, and Numba converts the
# caller's arrays to those types.  Roles: "r" read-only any-layout input, "c" read-only
# C-contiguous input, "w" writeable C-contiguous output, "" scalar.
_SPECIALISED = {}


def _arg_type(a, role):
    if not role:
        return typeof(a)
    # read-only inputs: "C" when C-contiguous (the common case: unit-stride channel rows
    # vectorise), else "A" (any strides)
    layout = "A" if role == "r" and not a.flags.c_contiguous else "C"
    return types.Array(from_dtype(a.dtype), a.ndim, layout, readonly=role != "w")


def call_specialised(pyfunc, roles, *args, parallel=True, fastmath=False):
    """``pyfunc(*args)`` compiled once per argument-type signature (``roles`` as above)."""
    sig = tuple(_arg_type(a, r) for a, r in zip(args, roles))
    key = (pyfunc.__name__, sig)
    disp = _SPECIALISED.get(key)
    if disp is None:
        disp = njit(sig, parallel=parallel, cache=True, fastmath=fastmath)(pyfunc)
        _SPECIALISED[key] = disp
    return disp(*args)


def pac_forward(x, xc, g, gc, w, b, has_bias, ks, st, lo, dl, kp, normalize, out):
    # the weight per window row, taps of the row stacked: wtt[r, c*O + o, c_in] = w[t, c_in, o]
    R, kw = int(ks[0] * ks[1]), int(ks[2])
    T, C, O = w.shape
    wtt = np.ascontiguousarray(w.reshape(R, kw, C, O).transpose(0, 1, 3, 2).reshape(R, kw * O, C))
    return call_specialised(_pac_forward, ("r", "", "r", "", "c", "c", "c", "", "c", "c", "c", "c", "c", "", "", "w"),
                            x, xc, g, gc, w, wtt, b, has_bias, ks, st, lo, dl, kp, normalize,
                            np.int64(get_num_threads()), out)


def pac_backward(go, gu, x, xc, g, gc, w, ks, st, lo, dl, kp, normalize, gx, gg, gw_part, gb_part):
    return call_specialised(_pac_backward,
                            ("r", "", "r", "", "r", "", "c", "c", "c", "c", "c", "c", "", "", "w", "w", "w", "w"),
                            go, gu, x, xc, g, gc, w, ks, st, lo, dl, kp, normalize, np.int64(gw_part.shape[0]), gx, gg,
                            gw_part, gb_part, fastmath={"reassoc", "contract"})


def count_nonfinite(a, code):
    return call_specialised(_count_nonfinite, ("r", ""), a, np.int64(code), parallel=False)
