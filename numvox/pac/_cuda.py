"""CUDA kernels of the pixel-adaptive convolution (imported only for CUDA calls).

One thread block per output tile (1 x TH x TW positions of one image and output plane).
Shared memory holds the tile's adaptive kernels (TP x T values) and an input region with
its halo, ``RZ x RY x RX`` positions, for a chunk of channels at a time: first the guide
features (to build the kernels, F in chunks), then the input channels (C in chunks).  The
output channels are split across threads, each thread owning (position, output channel)
pairs.  The backward pass uses atomics only where windows overlap (``grad_x``,
``grad_guide``) and reduces ``grad_weight``/``grad_bias`` over the tile in each thread
before one atomic add per weight and block.

Kernels work on the 3-D embedding (a 2-D problem has a leading spatial axis of size 1).
"""


import numpy as np
from numba import cuda, float32, float64

from .._shared._cuda_support import kernel_factory, unravel4
from .._shared.backend import cuda_simulated
from .._shared.halfprec import cuda_loaders
from . import _kinds

SHARED_BYTES = 48 * 1024  # static shared memory a block may use on every CUDA GPU

# ``prm`` (int64[12]): kd kh kw | st0 st1 st2 (3..5) | lo0 lo1 lo2 (6..8) | dl0 dl1 dl2 (9..11)


# the per-tap kernel of every kind (:mod:`._kinds`) as device functions; ``kp`` (float64[4])
tap_delta = cuda.jit(device=True, inline=True)(_kinds.tap_delta)
tap_value = cuda.jit(device=True, inline=True)(_kinds.tap_value)
tap_slope = cuda.jit(device=True, inline=True)(_kinds.tap_slope)


# -- index arithmetic of a tile (no dtype dependence) ---------------------------------------
@cuda.jit(device=True, inline=True)
def _tile(prm, TH, TW, Do, Ho, Wo):
    """This block's tile: image ``n``, output plane ``od``, tile row/column ``ty, tx``, the
    input origin ``(z0, y0, x0)`` of its region and the region's extents ``RY, RX`` and
    size ``R`` (positions)."""
    nty = (Ho + TH - 1) // TH
    ntx = (Wo + TW - 1) // TW
    n, od, ty, tx = unravel4(cuda.blockIdx.x, Do, nty, ntx)
    RY = (TH - 1) * prm[4] + (prm[1] - 1) * prm[10] + 1
    RX = (TW - 1) * prm[5] + (prm[2] - 1) * prm[11] + 1
    R = ((prm[0] - 1) * prm[9] + 1) * RY * RX
    z0 = od * prm[3] - prm[6]
    y0 = ty * TH * prm[4] - prm[7]
    x0 = tx * TW * prm[5] - prm[8]
    return n, od, ty, tx, z0, y0, x0, RY, RX, R


@cuda.jit(device=True, inline=True)
def _out_position(p, ty, tx, TH, TW, Ho, Wo):
    """Output row and column of tile position ``p`` and whether it is inside the output."""
    oy = ty * TH + p // TW
    ox = tx * TW + p % TW
    return oy, ox, oy < Ho and ox < Wo


@cuda.jit(device=True, inline=True)
def _tap(p, t, TW, RY, RX, prm, z0, y0, x0):
    """Tap ``t`` of tile position ``p``: its offset ``rq`` in the region, its input position
    ``(z, y, xx)`` and the tile row/column ``py, px``."""
    kh, kw = prm[1], prm[2]
    py = p // TW
    px = p % TW
    ta = t // (kh * kw)
    tb = (t // kw) % kh
    tc = t % kw
    rq = (ta * prm[9]) * RY * RX + (py * prm[4] + tb * prm[10]) * RX + (px * prm[5] + tc * prm[11])
    z = z0 + ta * prm[9]
    y = y0 + py * prm[4] + tb * prm[10]
    xx = x0 + px * prm[5] + tc * prm[11]
    return rq, z, y, xx, py, px


@cuda.jit(device=True, inline=True)
def _centre(p, TW, RY, RX, prm, z0, y0, x0):
    """The window centre of tile position ``p``: its region offset and input position."""
    py = p // TW
    px = p % TW
    rc = ((prm[0] // 2) * prm[9]) * RY * RX + (py * prm[4] + (prm[1] // 2) * prm[10]) * RX + (
        px * prm[5] + (prm[2] // 2) * prm[11])
    cz = z0 + (prm[0] // 2) * prm[9]
    cy = y0 + py * prm[4] + (prm[1] // 2) * prm[10]
    cx = x0 + px * prm[5] + (prm[2] // 2) * prm[11]
    return rc, cz, cy, cx


@cuda.jit(device=True, inline=True)
def inside(a, z, y, xx):
    return 0 <= z < a.shape[1] and 0 <= y < a.shape[2] and 0 <= xx < a.shape[3]


@cuda.jit(device=True, inline=True)
def _window_inverse(sm, p, T, normalize):
    """Normaliser of tile position ``p``'s kernel ``sm[p*T:(p+1)*T]``: with ``normalize``
    one over its sum (0 where the sum is 0), else 1."""
    inv = 1.0
    if normalize:
        s = 0.0
        for t in range(T):
            s += sm[p * T + t]
        inv = 1.0 / s if s != 0 else 0.0
    return inv


@cuda.jit(device=True, inline=True)
def flat_position(i, a):
    """``(n, z, y, x)`` of flat index ``i`` over the first four axes of ``a``."""
    Do, Ho, Wo = a.shape[1], a.shape[2], a.shape[3]
    return i // (Wo * Ho * Do), (i // (Wo * Ho)) % Do, (i // Wo) % Ho, i % Wo


def _shared_layout(double):
    """``(dtype, capacity)`` of the block's shared-memory array."""
    return (float64 if double else float32), SHARED_BYTES // (8 if double else 4)


# -- device functions that read input arrays (specialised per compute dtype) ---------------
@kernel_factory
def _tile_loaders(double):
    """``(load, load_region, build_kernels)`` for the compute dtype (float64 if ``double``)."""
    load32, load64 = cuda_loaders()
    load = load64 if double else load32

    @cuda.jit(device=True, inline=True)
    def load_region(sm, base, a, code, n, c0, nc, z0, y0, x0, RY, RX, R, tid, nth):
        """``sm[base + r*nc + c]``: channel ``c0 + c`` of region position ``r``, 0 outside."""
        for i in range(tid, R * nc, nth):
            r = i // nc
            c = i % nc
            z = z0 + r // (RY * RX)
            y = y0 + (r // RX) % RY
            xx = x0 + r % RX
            if inside(a, z, y, xx):
                sm[base + i] = load(a, (n, z, y, xx, c0 + c), code)
            else:
                sm[base + i] = 0

    @cuda.jit(device=True, inline=True)
    def build_kernels(sm, g, gc, n, z0, y0, x0, TW, TP, T, RY, RX, R, CH, REG, DS, prm, kp, tid, nth):
        """sm[p*T + t] = K of kind ``kp`` (0 for taps outside the image); with ``DS >= 0``
        also ``sm[DS + p*T + t]`` = the tap's summed squared difference (for ``dK/ds``)."""
        F = g.shape[4]
        TT = TP * T
        for i in range(tid, TT, nth):
            sm[i] = 0
        for f0 in range(0, F, CH):
            nf = min(CH, F - f0)
            cuda.syncthreads()
            load_region(sm, REG, g, gc, n, f0, nf, z0, y0, x0, RY, RX, R, tid, nth)
            cuda.syncthreads()
            for i in range(tid, TT, nth):
                p = i // T
                t = i % T
                rq, z, y, xx, py, px = _tap(p, t, TW, RY, RX, prm, z0, y0, x0)
                rc, cz, cy, cx = _centre(p, TW, RY, RX, prm, z0, y0, x0)
                acc = 0.0
                for f in range(nf):
                    d = tap_delta(sm[REG + rq * nf + f], sm[REG + rc * nf + f], kp)
                    acc += d * d
                sm[i] += acc
        cuda.syncthreads()
        for i in range(tid, TT, nth):
            rq, z, y, xx, py, px = _tap(i // T, i % T, TW, RY, RX, prm, z0, y0, x0)
            if DS >= 0:
                sm[DS + i] = sm[i]
            if inside(g, z, y, xx):
                sm[i] = tap_value(sm[i], kp)
            else:
                sm[i] = 0
        cuda.syncthreads()

    return load, load_region, build_kernels


@kernel_factory
def _forward_kernel(double):
    DT, CAP = _shared_layout(double)
    _, load_region, build_kernels = _tile_loaders(double)

    @cuda.jit
    def forward(x, xc, g, gc, w, b, has_bias, prm, kp, normalize, TH, TW, CH, out):
        C = x.shape[4]
        T = w.shape[0]
        O = w.shape[2]
        Do, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
        n, od, ty, tx, z0, y0, x0, RY, RX, R = _tile(prm, TH, TW, Do, Ho, Wo)
        tid = cuda.threadIdx.x
        nth = cuda.blockDim.x
        sm = cuda.shared.array(CAP, DT)
        TP = TH * TW
        REG = TP * T
        build_kernels(sm, g, gc, n, z0, y0, x0, TW, TP, T, RY, RX, R, CH, REG, -1, prm, kp, tid, nth)
        if normalize:
            for p in range(tid, TP, nth):
                inv = _window_inverse(sm, p, T, normalize)
                for t in range(T):
                    sm[p * T + t] *= inv
            cuda.syncthreads()
        # each thread owns the (p, o) pairs i = tid, tid + nth, ... of the tile
        for i in range(tid, TP * O, nth):
            oy, ox, inside = _out_position(i // O, ty, tx, TH, TW, Ho, Wo)
            if inside:
                out[n, od, oy, ox, i % O] = b[i % O] if has_bias else 0
        for c0 in range(0, C, CH):
            nc = min(CH, C - c0)
            cuda.syncthreads()
            load_region(sm, REG, x, xc, n, c0, nc, z0, y0, x0, RY, RX, R, tid, nth)
            cuda.syncthreads()
            for i in range(tid, TP * O, nth):
                p = i // O
                o = i % O
                oy, ox, inside = _out_position(p, ty, tx, TH, TW, Ho, Wo)
                if inside:
                    acc = 0.0
                    for t in range(T):
                        k = sm[p * T + t]
                        if k != 0:
                            rq, z, y, xx, py, px = _tap(p, t, TW, RY, RX, prm, z0, y0, x0)
                            s = 0.0
                            for c in range(nc):
                                s += w[t, c0 + c, o] * sm[REG + rq * nc + c]
                            acc += k * s
                    out[n, od, oy, ox, o] += acc

    return forward


@kernel_factory
def _backward_steps(double):
    """Device functions of the backward kernel's steps (specialised per compute dtype).

    Shared memory: ``sm[:TT]`` the raw kernels, ``sm[INV:INV+TP]`` the normalisers (0 for
    tile positions outside the output), ``sm[GG:GG+TT]`` ``dL/dK``, ``sm[REG:]`` a region."""
    load, load_region, _ = _tile_loaders(double)

    @cuda.jit(device=True, inline=True)
    def grad_bias(go, gu, n, od, ty, tx, TH, TW, TP, gb, tid, nth):
        # reduce the tile in each thread, one atomic per (block, o)
        Ho, Wo, O = go.shape[2], go.shape[3], go.shape[4]
        for o in range(tid, O, nth):
            s = 0.0
            for p in range(TP):
                oy, ox, inside = _out_position(p, ty, tx, TH, TW, Ho, Wo)
                if inside:
                    s += load(go, (n, od, oy, ox, o), gu)
            cuda.atomic.add(gb, o, s)

    @cuda.jit(device=True, inline=True)
    def grad_x_chunk(sm, go, gu, w, n, od, ty, tx, TH, TW, TT, T, c0, nc, z0, y0, x0, RY, RX, INV, GG, REG,
                     prm, gx, tid, nth):
        # grad_x of channels c0 .. c0+nc (atomics: windows overlap) and their part of dL/dK
        O = w.shape[2]
        for i in range(tid, TT * nc, nth):
            pt = i // nc
            c = i % nc
            p = pt // T
            t = pt % T
            kn = sm[pt] * sm[INV + p]
            if sm[pt] != 0 and sm[INV + p] != 0:
                rq, z, y, xx, py, px = _tap(p, t, TW, RY, RX, prm, z0, y0, x0)
                oy = ty * TH + py
                ox = tx * TW + px
                v = 0.0
                for o in range(O):
                    v += w[t, c0 + c, o] * load(go, (n, od, oy, ox, o), gu)
                cuda.atomic.add(gx, (n, z, y, xx, c0 + c), kn * v)
                cuda.atomic.add(sm, GG + pt, sm[REG + rq * nc + c] * v)

    @cuda.jit(device=True, inline=True)
    def grad_weight_chunk(sm, go, gu, n, od, ty, tx, TH, TW, TP, T, c0, nc, z0, y0, x0, RY, RX, INV, REG, prm,
                          gw, tid, nth):
        # each thread sums its (t, c, o) over the tile, one atomic add
        O = gw.shape[2]
        for i in range(tid, T * nc * O, nth):
            t = i // (nc * O)
            c = (i // O) % nc
            o = i % O
            s = 0.0
            for p in range(TP):
                kn = sm[p * T + t] * sm[INV + p]
                if kn != 0:
                    rq, z, y, xx, py, px = _tap(p, t, TW, RY, RX, prm, z0, y0, x0)
                    s += kn * sm[REG + rq * nc + c] * load(go, (n, od, ty * TH + py, tx * TW + px, o), gu)
            cuda.atomic.add(gw, (t, c0 + c, o), s)

    @cuda.jit(device=True, inline=True)
    def grad_guide_chunk(sm, TT, T, f0, nf, TW, z0, y0, x0, RY, RX, GG, REG, DS, prm, kp, gg, n, tid, nth):
        # dK/df_q = slope * Delta = -dK/df_c (tap_slope, tap_delta), for features f0 .. f0+nf
        for i in range(tid, TT * nf, nth):
            pt = i // nf
            f = i % nf
            p = pt // T
            t = pt % T
            rq, z, y, xx, py, px = _tap(p, t, TW, RY, RX, prm, z0, y0, x0)
            coef = 0.0
            if kp[0] == 0.0:
                coef = -sm[GG + pt] * sm[pt]
            elif inside(gg, z, y, xx):
                coef = sm[GG + pt] * tap_slope(sm[DS + pt], sm[pt], kp)
            if coef != 0:
                rc, cz, cy, cx = _centre(p, TW, RY, RX, prm, z0, y0, x0)
                dlt = coef * tap_delta(sm[REG + rq * nf + f], sm[REG + rc * nf + f], kp)
                cuda.atomic.add(gg, (n, z, y, xx, f0 + f), dlt)
                if inside(gg, cz, cy, cx):
                    cuda.atomic.add(gg, (n, cz, cy, cx, f0 + f), -dlt)

    return load_region, grad_bias, grad_x_chunk, grad_weight_chunk, grad_guide_chunk


@kernel_factory
def _backward_kernel(double):
    DT, CAP = _shared_layout(double)
    _, _, build_kernels = _tile_loaders(double)
    load_region, grad_bias, grad_x_chunk, grad_weight_chunk, grad_guide_chunk = _backward_steps(double)

    @cuda.jit
    def backward(go, gu, x, xc, g, gc, w, prm, kp, normalize, TH, TW, CH, gx, gg, gw, gb):
        C = x.shape[4]
        F = g.shape[4]
        T = w.shape[0]
        Do, Ho, Wo = go.shape[1], go.shape[2], go.shape[3]
        n, od, ty, tx, z0, y0, x0, RY, RX, R = _tile(prm, TH, TW, Do, Ho, Wo)
        tid = cuda.threadIdx.x
        nth = cuda.blockDim.x
        sm = cuda.shared.array(CAP, DT)
        TP = TH * TW
        TT = TP * T
        INV = TT  # TP values: 1/sum (normalize) or 1
        GG = TT + TP  # TT values: dL/dK
        DS = -1 if kp[0] == 0.0 else 2 * TT + TP  # TT values: summed squared differences (non-Gaussian)
        REG = 2 * TT + TP if DS < 0 else 3 * TT + TP
        build_kernels(sm, g, gc, n, z0, y0, x0, TW, TP, T, RY, RX, R, CH, REG, DS, prm, kp, tid, nth)
        for p in range(tid, TP, nth):
            inv = _window_inverse(sm, p, T, normalize)
            oy, ox, inside = _out_position(p, ty, tx, TH, TW, Ho, Wo)
            sm[INV + p] = inv if inside else 0  # positions outside: no gradient
        for i in range(tid, TT, nth):
            sm[GG + i] = 0
        grad_bias(go, gu, n, od, ty, tx, TH, TW, TP, gb, tid, nth)
        for c0 in range(0, C, CH):
            nc = min(CH, C - c0)
            cuda.syncthreads()
            load_region(sm, REG, x, xc, n, c0, nc, z0, y0, x0, RY, RX, R, tid, nth)
            cuda.syncthreads()
            grad_x_chunk(sm, go, gu, w, n, od, ty, tx, TH, TW, TT, T, c0, nc, z0, y0, x0, RY, RX, INV, GG, REG,
                         prm, gx, tid, nth)
            grad_weight_chunk(sm, go, gu, n, od, ty, tx, TH, TW, TP, T, c0, nc, z0, y0, x0, RY, RX, INV, REG, prm,
                              gw, tid, nth)
        cuda.syncthreads()
        if normalize:
            for p in range(tid, TP, nth):
                m = 0.0
                inv = sm[INV + p]
                for t in range(T):
                    m += sm[p * T + t] * inv * sm[GG + p * T + t]
                for t in range(T):
                    sm[GG + p * T + t] = (sm[GG + p * T + t] - m) * inv
            cuda.syncthreads()
        for f0 in range(0, F, CH):
            nf = min(CH, F - f0)
            cuda.syncthreads()
            load_region(sm, REG, g, gc, n, f0, nf, z0, y0, x0, RY, RX, R, tid, nth)
            cuda.syncthreads()
            grad_guide_chunk(sm, TT, T, f0, nf, TW, z0, y0, x0, RY, RX, GG, REG, DS, prm, kp, gg, n, tid, nth)

    return backward


def plan(geo, cap, simulated, per_tap=2):
    """Tile ``(TH, TW)``, channel chunk ``CH`` and threads per block for shared capacity ``cap``
    when the block keeps ``per_tap`` values per (position, tap) beside the region."""
    kd, kh, kw = (int(k) for k in geo["ks"])
    s1, s2 = int(geo["st"][1]), int(geo["st"][2])
    d0, d1, d2 = (int(v) for v in geo["dl"])
    T = kd * kh * kw
    Ho, Wo = geo["out3"][1], geo["out3"][2]
    start = 4 if simulated else 8
    TH, TW = max(1, min(start, Ho)), max(1, min(start, Wo))

    def need(TH, TW):
        TP = TH * TW
        R = ((kd - 1) * d0 + 1) * ((TH - 1) * s1 + (kh - 1) * d1 + 1) * ((TW - 1) * s2 + (kw - 1) * d2 + 1)
        return per_tap * TP * T + TP, R

    fixed, R = need(TH, TW)
    while fixed + R > cap:
        if TH == 1 and TW == 1:
            raise ValueError(
                f"the kernel {tuple(int(k) for k in geo['ks'])} (dilation {tuple(int(v) for v in geo['dl'])}) "
                f"is too large for the CUDA kernels' shared memory ({cap} values); use backend='cpu'"
            )
        if TH >= TW:
            TH = max(1, TH // 2)
        else:
            TW = max(1, TW // 2)
        fixed, R = need(TH, TW)
    CH = max(1, min(max(geo["C"], geo["F"], 1), (cap - fixed) // R))
    threads = 8 if simulated else 128
    return TH, TW, CH, threads


def cuda_params(call, geo):
    """``prm`` (window geometry) and ``kp`` (kernel kind) on the backend."""
    prm = np.concatenate([geo["ks"], geo["st"], geo["lo"], geo["dl"]]).astype(np.int64)
    kp = np.asarray(geo["kp"], np.float64)
    return (cuda.to_device(prm), cuda.to_device(kp)) if call.device_arrays else (prm, kp)


def _blocks(geo, TH, TW):
    Do, Ho, Wo = geo["out3"]
    return geo["N"] * Do * ((Ho + TH - 1) // TH) * ((Wo + TW - 1) // TW)


def cuda_inputs(call, *arrays):
    """Under the simulator, kernels launched on host arrays copy them back afterwards, which
    read-only or non-contiguous inputs refuse: hand inputs over as (simulated) device copies
    (on a GPU they are device arrays already, contiguous by construction)."""
    if call.device_arrays:  # pragma: no cover - needs a GPU
        return arrays
    return tuple(cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in arrays)


def forward(call, x, xc, g, gc, w, b, has_bias, geo, normalize, out):
    x, g, w, b = cuda_inputs(call, x, g, w, b)
    double = geo["dtype"] == np.float64
    fwd = _forward_kernel(double)
    TH, TW, CH, threads = plan(geo, _shared_layout(double)[1], cuda_simulated())
    fwd[_blocks(geo, TH, TW), threads](x, np.int64(xc), g, np.int64(gc), w, b, has_bias, *cuda_params(call, geo),
                                        normalize, TH, TW, CH, out)
    if call.device_arrays:  # pragma: no cover - needs a GPU
        cuda.synchronize()


def backward(call, go, gu, x, xc, g, gc, w, geo, normalize, gx, gg, gw, gb):
    go, x, g, w = cuda_inputs(call, go, x, g, w)
    double = geo["dtype"] == np.float64
    bwd = _backward_kernel(double)
    per_tap = 2 if geo["kp"][0] == 0 else 3  # non-Gaussian kinds keep each tap's distance
    TH, TW, CH, threads = plan(geo, _shared_layout(double)[1], cuda_simulated(), per_tap)
    bwd[_blocks(geo, TH, TW), threads](go, np.int64(gu), x, np.int64(xc), g, np.int64(gc), w, *cuda_params(call, geo),
                                        normalize, TH, TW, CH, gx, gg, gw, gb)
    if call.device_arrays:  # pragma: no cover - needs a GPU
        cuda.synchronize()
