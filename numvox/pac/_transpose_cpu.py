"""CPU kernels of the transposed PAC (pacnet's ``pacconv_transpose2d``), fused.

Arrays as in :mod:`._cpu` (3-D embedding, kernel views with half-precision codes, ``w`` the
``(T, C, O)`` weight in the compute dtype, ``kp`` the kernel kind, for the forward pass also
the internal ``dK/dlambda`` kind of :mod:`._params`), and int64 arrays of 3:
``ks``, ``st`` (stride), ``P`` (``(k-1)*dilation - padding``, the zero-inserted input's
low padding), ``hf`` (``(k-1)*dilation//2``, the guide window's offset) and ``dl``.

Output ``i`` and tap ``t`` read the zero-inserted input at ``v = i + t*dl - P``: a real
pixel ``v/st`` when ``v`` is a multiple of the stride inside the input, else an inserted
zero.  The kernels never build the zero-inserted input: output columns are grouped by
their phase ``i mod st`` along the row axis, which (with the row's phases along the other
axes) fixes the taps that can hit real pixels, ``~T/st^d`` of them.  Per block of up to
``PB`` columns of one phase, the kernel values of those taps (:mod:`._taps_cpu`) weight
the gathered input pixels and one small GEMM with the matching rows of the weight gives
the outputs: the work of a plain PAC on the input.
"""

import numpy as np
from numba import get_thread_id, njit, prange

from .._shared.halfprec import load_f64
from ._cpu import PB, band_count, band_item, call_specialised, scatter_bands
from ._taps_cpu import raw_kernel_grad, window_guide_grad, window_kernels, window_norms


@njit(inline="always", cache=True)
def _real(v, st, n):
    """The input index of zero-inserted index ``v``, or -1 for an inserted zero."""
    if v % st == 0 and 0 <= v // st < n:
        return v // st
    return -1


@njit(inline="always", cache=True)
def _phase_taps(od, oh, ph, x, ks, st, P, dl, taps):
    """Taps that can hit real pixels for output plane ``od``, row ``oh`` and columns of
    phase ``ph``: written to ``taps``, their number returned."""
    Tp = 0
    t = 0
    for a in range(ks[0]):
        for b in range(ks[1]):
            for c in range(ks[2]):
                if (_real(od + a * dl[0] - P[0], st[0], x.shape[1]) >= 0
                        and _real(oh + b * dl[1] - P[1], st[1], x.shape[2]) >= 0
                        and (ph + c * dl[2] - P[2]) % st[2] == 0):
                    taps[Tp] = t
                    Tp += 1
                t += 1
    return Tp


@njit(inline="always", cache=True)
def _phase(od, oh, ph, x, w, ks, st, P, dl, Wo, taps, zbuf, wbuf):
    """Set up the columns of phase ``ph`` of output row ``(od, oh)``: their taps
    (:func:`_phase_taps`), the scratch matrix ``Z`` (``PB x Tp*C``) over ``zbuf``, the
    matching weight rows ``Wsub`` (``Tp*C x O``) copied into ``wbuf``, and the number of
    columns.  Returns ``(Tp, Z, Wsub, ncol)``."""
    C, O = w.shape[1], w.shape[2]
    Tp = _phase_taps(od, oh, ph, x, ks, st, P, dl, taps)
    Z = zbuf[:PB * Tp * C].reshape((PB, Tp * C))
    Wsub = wbuf[:Tp * C * O].reshape((Tp * C, O))
    for tp in range(Tp):
        Wsub[tp * C:(tp + 1) * C] = w[taps[tp]]
    return Tp, Z, Wsub, (Wo - ph + st[2] - 1) // st[2]


@njit(inline="always", cache=True)
def _column(x, xc, g, gc, n, od, oh, ow, ks, st, P, hf, dl, kp, normalize, taps, Tp, valid, fc, K, S, inv, Z, j,
            C, weighted):
    """Window of output ``(od, oh, ow)``: ``valid`` taps, kernels ``K``/``S``, normaliser
    ``inv``, and row ``Z[j]`` (``Tp*C`` values): the phase taps' input pixels (0 for
    inserted zeros), times their normalised kernel if ``weighted``."""
    T = valid.shape[0]
    for t in range(T):
        valid[t] = False
    for tp in range(Tp):
        t = taps[tp]
        c = t % ks[2]
        valid[t] = _real(ow + c * dl[2] - P[2], st[2], x.shape[3]) >= 0
    window_kernels(g, gc, n, od - hf[0], oh - hf[1], ow - hf[2], ks, dl, kp, False, valid, fc, K, S)
    window_norms(K, normalize, inv)
    for tp in range(Tp):
        t = taps[tp]
        zrow = Z[j, tp * C:(tp + 1) * C]
        if valid[t]:
            a, b, c = t // (ks[1] * ks[2]), (t // ks[2]) % ks[1], t % ks[2]
            zi = (od + a * dl[0] - P[0]) // st[0]
            yi = (oh + b * dl[1] - P[1]) // st[1]
            xi = (ow + c * dl[2] - P[2]) // st[2]
            kn = K[t, 0] * inv[0] if weighted else 1.0
            for cc in range(C):
                zrow[cc] = kn * load_f64(x, (n, zi, yi, xi, cc), xc)
        else:
            for cc in range(C):
                zrow[cc] = 0.0


def _transpose_forward(x, xc, g, gc, w, b, has_bias, ks, st, P, hf, dl, kp, normalize, out):
    N, C = x.shape[0], x.shape[4]
    F = g.shape[4]
    T, _, O = w.shape
    Do, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    for r in prange(N * Do * Ho):
        n, od, oh = r // (Do * Ho), (r // Ho) % Do, r % Ho
        taps = np.empty(T, np.int64)
        valid = np.empty(T, np.bool_)
        fc = np.empty(F, np.float64)
        K = np.empty((T, 1), np.float64)
        S = np.empty((T, 1), np.float64)
        inv = np.empty(1, np.float64)
        zbuf = np.empty(PB * T * C, out.dtype)
        wbuf = np.empty(T * C * O, out.dtype)
        for ph in range(min(st[2], Wo)):
            Tp, Z, Wsub, ncol = _phase(od, oh, ph, x, w, ks, st, P, dl, Wo, taps, zbuf, wbuf)
            for j0 in range(0, ncol, PB):
                nb = min(PB, ncol - j0)
                for j in range(nb):
                    ow = ph + (j0 + j) * st[2]
                    _column(x, xc, g, gc, n, od, oh, ow, ks, st, P, hf, dl, kp, normalize, taps, Tp, valid, fc, K, S,
                            inv, Z, j, C, True)
                res = np.dot(Z[:nb], Wsub)
                for j in range(nb):
                    orow = out[n, od, oh, ph + (j0 + j) * st[2]]
                    for o in range(O):
                        orow[o] = res[j, o] + b[o] if has_bias else res[j, o]


@njit(inline="always", cache=True)
def _scatter_column(gx, n, od, oh, ow, ks, st, P, dl, taps, Tp, valid, K, inv, V, X, j, C, G):
    """grad_x of one window (``K_t * inv * V[j]``), ``G[t]`` = ``dL/dK_t`` of the
    normalised kernel, and ``X[j]`` turned into the K-weighted input row."""
    for t in range(G.shape[0]):
        G[t, 0] = 0.0
    for tp in range(Tp):
        t = taps[tp]
        if valid[t]:
            a, b, c = t // (ks[1] * ks[2]), (t // ks[2]) % ks[1], t % ks[2]
            zi = (od + a * dl[0] - P[0]) // st[0]
            yi = (oh + b * dl[1] - P[1]) // st[1]
            xi = (ow + c * dl[2] - P[2]) // st[2]
            kn = K[t, 0] * inv[0]
            s = 0.0
            for cc in range(C):
                v = V[j, tp * C + cc]
                gx[n, zi, yi, xi, cc] += kn * v
                s += X[j, tp * C + cc] * v
                X[j, tp * C + cc] *= kn
            G[t, 0] = s


def _transpose_backward(go, gu, x, xc, g, gc, w, ks, st, P, hf, dl, kp, normalize, nthreads, gx, gg, gw_part,
                        gb_part):
    """Writes ``gx``, ``gg`` (zeroed by the caller) and per-thread partials ``gw_part``
    (threads, T, C, O), ``gb_part`` (threads, O).  Output rows run in bands (even, then odd)
    so that concurrent bands never scatter into the same input or guide rows."""
    N, C = x.shape[0], x.shape[4]
    F = g.shape[4]
    T, _, O = w.shape
    Do, Ho, Wo = go.shape[1], go.shape[2], go.shape[3]
    L, bands = scatter_bands(ks[1], dl[1], 1, Ho, nthreads)
    for phase in range(2):
        for item in prange(N * band_count(bands, phase)):
            n, band = band_item(item, phase, bands)
            tid = get_thread_id()
            taps = np.empty(T, np.int64)
            valid = np.empty((PB, T), np.bool_)
            fc = np.empty((PB, F), np.float64)
            K = np.empty((PB, T, 1), np.float64)
            S = np.empty((PB, T, 1), np.float64)
            G = np.empty((T, 1), np.float64)
            inv = np.empty((PB, 1), np.float64)
            cacc = np.empty(F, np.float64)
            Gv = np.empty((PB, O), gx.dtype)
            zbuf = np.empty(PB * T * C, gx.dtype)
            wbuf = np.empty(T * C * O, gx.dtype)
            for oh in range(band * L, min(Ho, (band + 1) * L)):
                for od in range(Do):
                    for ph in range(min(st[2], Wo)):
                        Tp, X, Wsub, ncol = _phase(od, oh, ph, x, w, ks, st, P, dl, Wo, taps, zbuf, wbuf)
                        for j0 in range(0, ncol, PB):
                            nb = min(PB, ncol - j0)
                            for j in range(nb):
                                ow = ph + (j0 + j) * st[2]
                                for o in range(O):
                                    gval = load_f64(go, (n, od, oh, ow, o), gu)
                                    Gv[j, o] = gval
                                    gb_part[tid, o] += gval
                                _column(x, xc, g, gc, n, od, oh, ow, ks, st, P, hf, dl, kp, normalize, taps, Tp,
                                        valid[j], fc[j], K[j], S[j], inv[j], X, j, C, False)
                            V = np.dot(Gv[:nb], Wsub.T)
                            for j in range(nb):
                                ow = ph + (j0 + j) * st[2]
                                _scatter_column(gx, n, od, oh, ow, ks, st, P, dl, taps, Tp, valid[j], K[j], inv[j], V,
                                                X, j, C, G)
                                raw_kernel_grad(K[j], inv[j], normalize, G)
                                window_guide_grad(g, gc, gg, n, od - hf[0], oh - hf[1], ow - hf[2], ks, dl, kp, False,
                                                  valid[j], fc[j], K[j], S[j], G, cacc)
                            gws = np.dot(X[:nb].T, Gv[:nb])
                            for tp in range(Tp):
                                gw_part[tid, taps[tp]] += gws[tp * C:(tp + 1) * C]


def transpose_forward(x, xc, g, gc, w, b, has_bias, ks, st, P, hf, dl, kp, normalize, out):
    return call_specialised(_transpose_forward,
                            ("r", "", "r", "", "c", "c", "", "c", "c", "c", "c", "c", "c", "", "w"),
                            x, xc, g, gc, w, b, has_bias, ks, st, P, hf, dl, kp, normalize, out)


def transpose_backward(go, gu, x, xc, g, gc, w, ks, st, P, hf, dl, kp, normalize, gx, gg, gw_part, gb_part):
    return call_specialised(_transpose_backward,
                            ("r", "", "r", "", "r", "", "c", "c", "c", "c", "c", "c", "c", "", "", "w", "w", "w", "w"),
                            go, gu, x, xc, g, gc, w, ks, st, P, hf, dl, kp, normalize, np.int64(gw_part.shape[0]),
                            gx, gg, gw_part, gb_part, fastmath={"reassoc", "contract"})
