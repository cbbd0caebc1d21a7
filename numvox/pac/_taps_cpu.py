"""CPU pieces shared by the PAC operators: the per-tap kernel of :mod:`._kinds` compiled
with ``njit``, and the scalar per-window steps of PAC pooling and transposed PAC (one
window's kernels, their normalisers, and its guide-gradient scatter).

A window is given by the guide position of its first tap ``(z0, y0, x0)``, the kernel size
``ks`` and dilation ``dl`` (int64 arrays of 3, the 3-D embedding) and ``valid[t]``: whether
tap ``t`` reads a real input pixel (taps that do not have ``K = 0``, pacnet's mask).  The
guide is zero outside its image.  Kernels are per feature (``K[t, f]``) when
``channel_wise``, else one value per tap (``K[t, 0]``).
"""

from numba import njit

from .._shared.halfprec import load_f64
from . import _kinds

tap_delta = njit(inline="always", cache=True)(_kinds.tap_delta)
tap_value = njit(inline="always", cache=True)(_kinds.tap_value)
tap_slope = njit(inline="always", cache=True)(_kinds.tap_slope)


@njit(inline="always", cache=True)
def guide_at(g, gc, n, z, y, xx, f):
    """Guide feature ``f`` at ``(z, y, xx)``, 0 outside the image."""
    if 0 <= z < g.shape[1] and 0 <= y < g.shape[2] and 0 <= xx < g.shape[3]:
        return load_f64(g, (n, z, y, xx, f), gc)
    return 0.0


@njit(inline="always", cache=True)
def window_kernels(g, gc, n, z0, y0, x0, ks, dl, kp, channel_wise, valid, fc, K, S):
    """``K[t, k]`` (0 where not ``valid[t]``) and ``S[t, k]``, the summed squared differences
    (for :func:`tap_slope`), of one window, for any kind ``kp`` of :mod:`._kinds`; ``fc``
    gets the centre's features."""
    F = g.shape[4]
    cz, cy, cx = z0 + (ks[0] // 2) * dl[0], y0 + (ks[1] // 2) * dl[1], x0 + (ks[2] // 2) * dl[2]
    for f in range(F):
        fc[f] = guide_at(g, gc, n, cz, cy, cx, f)
    t = 0
    for a in range(ks[0]):
        for b in range(ks[1]):
            for c in range(ks[2]):
                z, y, xx = z0 + a * dl[0], y0 + b * dl[1], x0 + c * dl[2]
                s = 0.0
                for f in range(F):
                    if valid[t]:
                        d = tap_delta(guide_at(g, gc, n, z, y, xx, f), fc[f], kp)
                        s = d * d if channel_wise else s + d * d
                    if channel_wise:
                        S[t, f] = s
                        K[t, f] = tap_value(s, kp) if valid[t] else 0.0
                if not channel_wise:
                    S[t, 0] = s
                    K[t, 0] = tap_value(s, kp) if valid[t] else 0.0
                t += 1


@njit(inline="always", cache=True)
def window_norms(K, normalize, inv):
    """``inv[k]``: with ``normalize`` one over ``sum_t K[t, k]`` (0 where that sum is 0), else 1."""
    for k in range(inv.shape[0]):
        s = 0.0
        if normalize:
            for t in range(K.shape[0]):
                s += K[t, k]
        inv[k] = (1.0 / s if s != 0.0 else 0.0) if normalize else 1.0


@njit(inline="always", cache=True)
def raw_kernel_grad(K, inv, normalize, G):
    """``G[t, k]``: from ``dL/dK`` of the normalised kernel ``K * inv`` to ``dL/dK`` of the
    raw kernel (the normaliser depends on every tap)."""
    if normalize:
        for k in range(inv.shape[0]):
            m = 0.0
            for t in range(K.shape[0]):
                m += K[t, k] * inv[k] * G[t, k]
            for t in range(K.shape[0]):
                G[t, k] = (G[t, k] - m) * inv[k]


@njit(inline="always", cache=True)
def window_guide_grad(g, gc, gg, n, z0, y0, x0, ks, dl, kp, channel_wise, valid, fc, K, S, G, cacc):
    """Scatter one window's guide gradient into ``gg`` from ``G[t, k] = dL/dK[t, k]``:
    ``dK/df_q = slope * Delta`` at each valid tap inside the image and the opposite sum at
    the window centre (if inside)."""
    D, H, W, F = g.shape[1], g.shape[2], g.shape[3], g.shape[4]
    for f in range(F):
        cacc[f] = 0.0
    t = 0
    for a in range(ks[0]):
        for b in range(ks[1]):
            for c in range(ks[2]):
                z, y, xx = z0 + a * dl[0], y0 + b * dl[1], x0 + c * dl[2]
                if valid[t]:
                    inside = 0 <= z < D and 0 <= y < H and 0 <= xx < W
                    coef = 0.0 if channel_wise else G[t, 0] * tap_slope(S[t, 0], K[t, 0], kp)
                    for f in range(F):
                        if channel_wise:
                            coef = G[t, f] * tap_slope(S[t, f], K[t, f], kp)
                        dlt = coef * tap_delta(guide_at(g, gc, n, z, y, xx, f), fc[f], kp)
                        if inside:
                            gg[n, z, y, xx, f] += dlt
                        cacc[f] += dlt
                t += 1
    cz, cy, cx = z0 + (ks[0] // 2) * dl[0], y0 + (ks[1] // 2) * dl[1], x0 + (ks[2] // 2) * dl[2]
    if 0 <= cz < D and 0 <= cy < H and 0 <= cx < W:
        for f in range(F):
            gg[n, cz, cy, cx, f] -= cacc[f]
