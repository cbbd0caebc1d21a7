"""CPU kernels of PAC pooling (pacnet's ``pacpool2d``): ``out[i, c] = sum_t K_t(i) x[q_t, c]``.

Arrays as in :mod:`._cpu` (3-D embedding, kernel views with half-precision codes, int64
``ks``, ``st``, ``lo``, ``dl``; ``kp`` the kernel kind, for the forward pass also the
internal ``dK/dlambda`` kind of :mod:`._params`).  One window at a time: its
kernels (``F*T`` work, :func:`._taps_cpu.window_kernels`) then the ``C*T`` weighted sum; no
patch buffers.  Output rows run in parallel; the backward pass scatters into ``grad_x`` and
``grad_guide`` in row bands (:func:`._cpu.scatter_bands`).
"""

import numpy as np
from numba import njit, prange

from .._shared.halfprec import load_f64
from ._cpu import band_count, band_item, call_specialised, scatter_bands, thread_count
from ._taps_cpu import raw_kernel_grad, window_guide_grad, window_kernels, window_norms


@njit(inline="always", cache=True)
def _valid_taps(x, z0, y0, x0, ks, dl, valid):
    """``valid[t]``: tap ``t`` of the window starting at ``(z0, y0, x0)`` is inside ``x``."""
    t = 0
    for a in range(ks[0]):
        for b in range(ks[1]):
            for c in range(ks[2]):
                z, y, xx = z0 + a * dl[0], y0 + b * dl[1], x0 + c * dl[2]
                valid[t] = 0 <= z < x.shape[1] and 0 <= y < x.shape[2] and 0 <= xx < x.shape[3]
                t += 1


@njit(inline="always", cache=True)
def _tap_position(t, z0, y0, x0, ks, dl):
    """Position of tap ``t`` of the window starting at ``(z0, y0, x0)``."""
    a = t // (ks[1] * ks[2])
    b = (t // ks[2]) % ks[1]
    c = t % ks[2]
    return z0 + a * dl[0], y0 + b * dl[1], x0 + c * dl[2]


def _pool_forward(x, xc, g, gc, ks, st, lo, dl, kp, normalize, channel_wise, out):
    N, C = x.shape[0], x.shape[4]
    F = g.shape[4]
    Do, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    T = ks[0] * ks[1] * ks[2]
    KC = F if channel_wise else 1
    for r in prange(N * Do * Ho):
        n, od, oh = r // (Do * Ho), (r // Ho) % Do, r % Ho
        valid = np.empty(T, np.bool_)
        fc = np.empty(F, np.float64)
        K = np.empty((T, KC), np.float64)
        S = np.empty((T, KC), np.float64)
        inv = np.empty(KC, np.float64)
        acc = np.empty(C, np.float64)
        z0, y0 = od * st[0] - lo[0], oh * st[1] - lo[1]
        for ow in range(Wo):
            x0 = ow * st[2] - lo[2]
            _valid_taps(x, z0, y0, x0, ks, dl, valid)
            window_kernels(g, gc, n, z0, y0, x0, ks, dl, kp, channel_wise, valid, fc, K, S)
            window_norms(K, normalize, inv)
            acc[:] = 0.0
            for t in range(T):
                if valid[t]:
                    z, y, xx = _tap_position(t, z0, y0, x0, ks, dl)
                    for c in range(C):
                        k = c if channel_wise else 0
                        acc[c] += K[t, k] * inv[k] * load_f64(x, (n, z, y, xx, c), xc)
            for c in range(C):
                out[n, od, oh, ow, c] = acc[c]


def _pool_backward(go, gu, x, xc, g, gc, ks, st, lo, dl, kp, normalize, channel_wise, nthreads, gx, gg):
    N, C = x.shape[0], x.shape[4]
    F = g.shape[4]
    Do, Ho, Wo = go.shape[1], go.shape[2], go.shape[3]
    T = ks[0] * ks[1] * ks[2]
    KC = F if channel_wise else 1
    L, bands = scatter_bands(ks[1], dl[1], st[1], Ho, nthreads)
    for ph in range(2):
        for item in prange(N * band_count(bands, ph)):
            n, band = band_item(item, ph, bands)
            valid = np.empty(T, np.bool_)
            fc = np.empty(F, np.float64)
            K = np.empty((T, KC), np.float64)
            S = np.empty((T, KC), np.float64)
            G = np.empty((T, KC), np.float64)
            inv = np.empty(KC, np.float64)
            gvals = np.empty(C, np.float64)
            cacc = np.empty(F, np.float64)
            for oh in range(band * L, min(Ho, (band + 1) * L)):
                y0 = oh * st[1] - lo[1]
                for od in range(Do):
                    z0 = od * st[0] - lo[0]
                    for ow in range(Wo):
                        x0 = ow * st[2] - lo[2]
                        _valid_taps(x, z0, y0, x0, ks, dl, valid)
                        window_kernels(g, gc, n, z0, y0, x0, ks, dl, kp, channel_wise, valid, fc, K, S)
                        window_norms(K, normalize, inv)
                        for c in range(C):
                            gvals[c] = load_f64(go, (n, od, oh, ow, c), gu)
                        for t in range(T):
                            for k in range(KC):
                                G[t, k] = 0.0
                            if valid[t]:
                                z, y, xx = _tap_position(t, z0, y0, x0, ks, dl)
                                for c in range(C):
                                    k = c if channel_wise else 0
                                    gx[n, z, y, xx, c] += K[t, k] * inv[k] * gvals[c]
                                    G[t, k] += gvals[c] * load_f64(x, (n, z, y, xx, c), xc)
                        raw_kernel_grad(K, inv, normalize, G)
                        window_guide_grad(g, gc, gg, n, z0, y0, x0, ks, dl, kp, channel_wise, valid, fc, K, S, G,
                                          cacc)


def pool_forward(x, xc, g, gc, ks, st, lo, dl, kp, normalize, channel_wise, out):
    return call_specialised(_pool_forward, ("r", "", "r", "", "c", "c", "c", "c", "c", "", "", "w"),
                            x, xc, g, gc, ks, st, lo, dl, kp, normalize, channel_wise, out)


def pool_backward(go, gu, x, xc, g, gc, ks, st, lo, dl, kp, normalize, channel_wise, gx, gg):
    return call_specialised(_pool_backward, ("r", "", "r", "", "r", "", "c", "c", "c", "c", "c", "", "", "", "w", "w"),
                            go, gu, x, xc, g, gc, ks, st, lo, dl, kp, normalize, channel_wise,
                            np.int64(thread_count()), gx, gg)
