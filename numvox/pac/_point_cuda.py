"""CUDA kernels of the PAC operators that work one output position per thread: PAC pooling
and the transposed PAC (imported only for CUDA calls).

Grid-stride loops over the output positions, 3-D embedding, the per-tap kernel of
:mod:`._cuda` (:mod:`._kinds`).  Forward passes accumulate their own output row; backward
passes recompute each window's kernels and scatter into the input, guide (and weight)
gradients with atomics, as windows overlap.  Like the CPU kernels, the transposed PAC
visits only the taps that hit real input pixels (``i + t*dl - P`` a multiple of the stride
inside the input), never a zero-inserted input.  Pooling does ``C*T`` work per position
and the transposed PAC ``T*C*O/stride^d``; neither keeps anything in shared memory.

The device functions that use ``cuda.atomic`` live in this module with the kernels that
call them (Numba's simulator swaps in its atomics per kernel module).
"""

import numpy as np
from numba import cuda

from .._shared._cuda_support import kernel_factory, launch_1d
from .._shared.backend import cuda_simulated
from .._shared.halfprec import cuda_loaders
from ._cuda import cuda_inputs, cuda_params, flat_position, inside, tap_delta, tap_slope, tap_value


@kernel_factory
def _point_loaders(double):
    """``(load, distance, scatter_guide)`` for the compute dtype, for kernels that read
    single positions (the guide is 0 outside its image): ``distance`` is the summed squared
    (rectified) difference of features ``f0 .. f1-1`` between a tap and a centre."""
    load32, load64 = cuda_loaders()
    load = load64 if double else load32

    @cuda.jit(device=True, inline=True)
    def guide_value(g, gc, n, z, y, xx, f):
        return load(g, (n, z, y, xx, f), gc) if inside(g, z, y, xx) else 0.0

    @cuda.jit(device=True, inline=True)
    def distance(g, gc, n, z, y, xx, cz, cy, cx, f0, f1, kp):
        s = 0.0
        for f in range(f0, f1):
            d = tap_delta(guide_value(g, gc, n, z, y, xx, f), guide_value(g, gc, n, cz, cy, cx, f), kp)
            s += d * d
        return s

    @cuda.jit(device=True, inline=True)
    def scatter_guide(gg, g, gc, n, z, y, xx, cz, cy, cx, f0, f1, graw, kp):
        """Add a tap's guide gradient for ``dL/dK = graw``: ``slope * Delta`` at the tap
        and its opposite at the centre (features ``f0 .. f1-1``, atomics, inside only)."""
        s = distance(g, gc, n, z, y, xx, cz, cy, cx, f0, f1, kp)
        coef = graw * tap_slope(s, tap_value(s, kp), kp)
        if coef != 0:
            for f in range(f0, f1):
                dlt = coef * tap_delta(guide_value(g, gc, n, z, y, xx, f), guide_value(g, gc, n, cz, cy, cx, f), kp)
                if inside(g, z, y, xx):
                    cuda.atomic.add(gg, (n, z, y, xx, f), dlt)
                if inside(g, cz, cy, cx):
                    cuda.atomic.add(gg, (n, cz, cy, cx, f), -dlt)

    return load, distance, scatter_guide


# pooling: ``prm`` (int64[12]) kd kh kw | st0 st1 st2 | lo0 lo1 lo2 | dl0 dl1 dl2, as in ._cuda;
# transposed: ``prm`` (int64[15]) kd kh kw | st0 st1 st2 | P0 P1 P2 | hf0 hf1 hf2 | dl0 dl1 dl2


@cuda.jit(device=True, inline=True)
def _tap_at(prm, od, oh, ow, t):
    """Input position of tap ``t`` of output ``(od, oh, ow)``; ``t = -1``: the window centre."""
    if t < 0:
        a, b, c = prm[0] // 2, prm[1] // 2, prm[2] // 2
    else:
        a, b, c = t // (prm[1] * prm[2]), (t // prm[2]) % prm[1], t % prm[2]
    return (od * prm[3] - prm[6] + a * prm[9], oh * prm[4] - prm[7] + b * prm[10],
            ow * prm[5] - prm[8] + c * prm[11])


@cuda.jit(device=True, inline=True)
def _offsets(prm, t):
    """Tap ``t``'s offsets along the three axes; ``t = -1``: the centre tap."""
    if t < 0:
        return prm[0] // 2, prm[1] // 2, prm[2] // 2
    return t // (prm[1] * prm[2]), (t // prm[2]) % prm[1], t % prm[2]


@cuda.jit(device=True, inline=True)
def _real(v, st, n):
    return v // st if v % st == 0 and 0 <= v // st < n else -1


@cuda.jit(device=True, inline=True)
def _input_at(prm, x, od, oh, ow, t):
    """Input pixel of tap ``t`` of output ``(od, oh, ow)`` and whether it is real."""
    a, b, c = _offsets(prm, t)
    zi = _real(od + a * prm[12] - prm[6], prm[3], x.shape[1])
    yi = _real(oh + b * prm[13] - prm[7], prm[4], x.shape[2])
    xi = _real(ow + c * prm[14] - prm[8], prm[5], x.shape[3])
    return zi, yi, xi, zi >= 0 and yi >= 0 and xi >= 0


@cuda.jit(device=True, inline=True)
def _guide_pos(prm, od, oh, ow, t):
    a, b, c = _offsets(prm, t)
    return od - prm[9] + a * prm[12], oh - prm[10] + b * prm[13], ow - prm[11] + c * prm[14]


@kernel_factory
def _pool_kernels(double):
    load, tap_distance, scatter_guide = _point_loaders(double)

    @cuda.jit(device=True, inline=True)
    def feature_range(k, F, channel_wise):
        return (k, k + 1) if channel_wise else (0, F)

    @cuda.jit(device=True, inline=True)
    def inverse(g, gc, x, n, od, oh, ow, cz, cy, cx, k, F, T, prm, kp, normalize, channel_wise):
        """One over the window's kernel sum (kernel ``k``), or 1 without ``normalize``."""
        if not normalize:
            return 1.0
        f0, f1 = feature_range(k, F, channel_wise)
        s = 0.0
        for t in range(T):
            z, y, xx = _tap_at(prm, od, oh, ow, t)
            if inside(x, z, y, xx):
                s += tap_value(tap_distance(g, gc, n, z, y, xx, cz, cy, cx, f0, f1, kp), kp)
        return 1.0 / s if s != 0 else 0.0

    @cuda.jit
    def forward(x, xc, g, gc, prm, kp, normalize, channel_wise, out):
        C, F = x.shape[4], g.shape[4]
        T = prm[0] * prm[1] * prm[2]
        total = out.shape[0] * out.shape[1] * out.shape[2] * out.shape[3]
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            n, od, oh, ow = flat_position(i, out)
            cz, cy, cx = _tap_at(prm, od, oh, ow, -1)
            for k in range(F if channel_wise else 1):
                f0, f1 = feature_range(k, F, channel_wise)
                inv = inverse(g, gc, x, n, od, oh, ow, cz, cy, cx, k, F, T, prm, kp, normalize, channel_wise)
                c0, c1 = (k, k + 1) if channel_wise else (0, C)
                for c in range(c0, c1):
                    out[n, od, oh, ow, c] = 0
                for t in range(T):
                    z, y, xx = _tap_at(prm, od, oh, ow, t)
                    if inside(x, z, y, xx):
                        kn = tap_value(tap_distance(g, gc, n, z, y, xx, cz, cy, cx, f0, f1, kp), kp) * inv
                        for c in range(c0, c1):
                            out[n, od, oh, ow, c] += kn * load(x, (n, z, y, xx, c), xc)

    @cuda.jit
    def backward(go, gu, x, xc, g, gc, prm, kp, normalize, channel_wise, gx, gg):
        C, F = x.shape[4], g.shape[4]
        T = prm[0] * prm[1] * prm[2]
        total = go.shape[0] * go.shape[1] * go.shape[2] * go.shape[3]
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            n, od, oh, ow = flat_position(i, go)
            cz, cy, cx = _tap_at(prm, od, oh, ow, -1)
            for k in range(F if channel_wise else 1):
                f0, f1 = feature_range(k, F, channel_wise)
                c0, c1 = (k, k + 1) if channel_wise else (0, C)
                inv = inverse(g, gc, x, n, od, oh, ow, cz, cy, cx, k, F, T, prm, kp, normalize, channel_wise)
                # grad_x and m = sum_t K_t inv G_t (G_t = dL/d(K_t inv))
                m = 0.0
                for t in range(T):
                    z, y, xx = _tap_at(prm, od, oh, ow, t)
                    if inside(x, z, y, xx):
                        kn = tap_value(tap_distance(g, gc, n, z, y, xx, cz, cy, cx, f0, f1, kp), kp) * inv
                        gt = 0.0
                        for c in range(c0, c1):
                            gv = load(go, (n, od, oh, ow, c), gu)
                            cuda.atomic.add(gx, (n, z, y, xx, c), kn * gv)
                            gt += gv * load(x, (n, z, y, xx, c), xc)
                        m += kn * gt
                # grad_guide: dL/dK of the raw kernel times dK/df
                for t in range(T):
                    z, y, xx = _tap_at(prm, od, oh, ow, t)
                    if inside(x, z, y, xx):
                        gt = 0.0
                        for c in range(c0, c1):
                            gt += load(go, (n, od, oh, ow, c), gu) * load(x, (n, z, y, xx, c), xc)
                        graw = (gt - m) * inv if normalize else gt
                        scatter_guide(gg, g, gc, n, z, y, xx, cz, cy, cx, f0, f1, graw, kp)

    return forward, backward


@kernel_factory
def _transpose_kernels(double):
    load, tap_distance, scatter_guide = _point_loaders(double)

    @cuda.jit(device=True, inline=True)
    def distance(g, gc, n, prm, od, oh, ow, t, kp):
        """Summed squared (rectified) guide differences of tap ``t`` and the centre."""
        z, y, xx = _guide_pos(prm, od, oh, ow, t)
        cz, cy, cx = _guide_pos(prm, od, oh, ow, -1)
        return tap_distance(g, gc, n, z, y, xx, cz, cy, cx, 0, g.shape[4], kp)

    @cuda.jit(device=True, inline=True)
    def inverse(x, g, gc, n, prm, od, oh, ow, T, kp, normalize):
        if not normalize:
            return 1.0
        s = 0.0
        for t in range(T):
            zi, yi, xi, real = _input_at(prm, x, od, oh, ow, t)
            if real:
                s += tap_value(distance(g, gc, n, prm, od, oh, ow, t, kp), kp)
        return 1.0 / s if s != 0 else 0.0

    @cuda.jit
    def forward(x, xc, g, gc, w, b, has_bias, prm, kp, normalize, out):
        C, O, T = x.shape[4], w.shape[2], w.shape[0]
        total = out.shape[0] * out.shape[1] * out.shape[2] * out.shape[3]
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            n, od, oh, ow = flat_position(i, out)
            inv = inverse(x, g, gc, n, prm, od, oh, ow, T, kp, normalize)
            for o in range(O):
                out[n, od, oh, ow, o] = 0
            for t in range(T):
                zi, yi, xi, real = _input_at(prm, x, od, oh, ow, t)
                if real:
                    kn = tap_value(distance(g, gc, n, prm, od, oh, ow, t, kp), kp) * inv
                    for o in range(O):
                        s = 0.0
                        for c in range(C):
                            s += w[t, c, o] * load(x, (n, zi, yi, xi, c), xc)
                        out[n, od, oh, ow, o] += kn * s
            if has_bias:
                for o in range(O):
                    out[n, od, oh, ow, o] += b[o]

    @cuda.jit(device=True, inline=True)
    def kernel_grad(go, gu, x, xc, w, n, od, oh, ow, zi, yi, xi, t):
        """``dL/dK_t`` of the normalised kernel: ``sum_c x * sum_o W[t, c, o] g[o]``."""
        gt = 0.0
        for c in range(x.shape[4]):
            v = 0.0
            for o in range(w.shape[2]):
                v += w[t, c, o] * load(go, (n, od, oh, ow, o), gu)
            gt += v * load(x, (n, zi, yi, xi, c), xc)
        return gt

    @cuda.jit
    def backward(go, gu, x, xc, g, gc, w, prm, kp, normalize, gx, gg, gw, gb):
        C, O, T, F = x.shape[4], w.shape[2], w.shape[0], g.shape[4]
        total = go.shape[0] * go.shape[1] * go.shape[2] * go.shape[3]
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            n, od, oh, ow = flat_position(i, go)
            inv = inverse(x, g, gc, n, prm, od, oh, ow, T, kp, normalize)
            for o in range(O):
                cuda.atomic.add(gb, o, load(go, (n, od, oh, ow, o), gu))
            m = 0.0
            for t in range(T):
                zi, yi, xi, real = _input_at(prm, x, od, oh, ow, t)
                if real:
                    kn = tap_value(distance(g, gc, n, prm, od, oh, ow, t, kp), kp) * inv
                    for c in range(C):
                        xv = load(x, (n, zi, yi, xi, c), xc)
                        v = 0.0
                        for o in range(O):
                            gv = load(go, (n, od, oh, ow, o), gu)
                            v += w[t, c, o] * gv
                            cuda.atomic.add(gw, (t, c, o), kn * xv * gv)
                        cuda.atomic.add(gx, (n, zi, yi, xi, c), kn * v)
                    m += kn * kernel_grad(go, gu, x, xc, w, n, od, oh, ow, zi, yi, xi, t)
            cz, cy, cx = _guide_pos(prm, od, oh, ow, -1)
            for t in range(T):
                zi, yi, xi, real = _input_at(prm, x, od, oh, ow, t)
                if real:
                    gt = kernel_grad(go, gu, x, xc, w, n, od, oh, ow, zi, yi, xi, t)
                    graw = (gt - m) * inv if normalize else gt
                    z, y, xx = _guide_pos(prm, od, oh, ow, t)
                    scatter_guide(gg, g, gc, n, z, y, xx, cz, cy, cx, 0, F, graw, kp)

    return forward, backward


def _grid(shape):
    """One thread per output position (grid-stride)."""
    return launch_1d(int(np.prod(shape[:4])), 32 if cuda_simulated() else 128)


def pool_forward_cuda(call, x, xc, g, gc, geo, normalize, channel_wise, out):
    x, g = cuda_inputs(call, x, g)
    fwd, _ = _pool_kernels(geo["dtype"] == np.float64)
    blocks, threads = _grid(out.shape)
    fwd[blocks, threads](x, np.int64(xc), g, np.int64(gc), *cuda_params(call, geo), normalize, channel_wise, out)
    if call.device_arrays:  # pragma: no cover - needs a GPU
        cuda.synchronize()


def pool_backward_cuda(call, go, gu, x, xc, g, gc, geo, normalize, channel_wise, gx, gg):
    go, x, g = cuda_inputs(call, go, x, g)
    _, bwd = _pool_kernels(geo["dtype"] == np.float64)
    blocks, threads = _grid(go.shape)
    bwd[blocks, threads](go, np.int64(gu), x, np.int64(xc), g, np.int64(gc), *cuda_params(call, geo), normalize,
                         channel_wise, gx, gg)
    if call.device_arrays:  # pragma: no cover - needs a GPU
        cuda.synchronize()


def _transpose_params(call, geo):
    prm = np.concatenate([geo["ks"], geo["st"], geo["P"], geo["hf"], geo["dl"]]).astype(np.int64)
    kp = np.asarray(geo["kp"], np.float64)
    return (cuda.to_device(prm), cuda.to_device(kp)) if call.device_arrays else (prm, kp)




def transpose_forward_cuda(call, x, xc, g, gc, w, b, has_bias, geo, normalize, out):
    x, g, w, b = cuda_inputs(call, x, g, w, b)
    fwd, _ = _transpose_kernels(geo["dtype"] == np.float64)
    blocks, threads = _grid(out.shape)
    fwd[blocks, threads](x, np.int64(xc), g, np.int64(gc), w, b, has_bias, *_transpose_params(call, geo), normalize,
                         out)
    if call.device_arrays:  # pragma: no cover - needs a GPU
        cuda.synchronize()


def transpose_backward_cuda(call, go, gu, x, xc, g, gc, w, geo, normalize, gx, gg, gw, gb):
    go, x, g, w = cuda_inputs(call, go, x, g, w)
    _, bwd = _transpose_kernels(geo["dtype"] == np.float64)
    blocks, threads = _grid(go.shape)
    bwd[blocks, threads](go, np.int64(gu), x, np.int64(xc), g, np.int64(gc), w, *_transpose_params(call, geo),
                         normalize, gx, gg, gw, gb)
    if call.device_arrays:  # pragma: no cover - needs a GPU
        cuda.synchronize()
