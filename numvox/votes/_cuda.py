"""CUDA kernels for vote aggregation and heatmap peaks (imported only for CUDA calls).

``aggregate``: one thread per source voxel in a grid-stride loop over the flattened
``(b, x, y, z)`` index, so the threads of a warp read consecutive voxels, i.e. one
contiguous run of ``32 * (L+1)`` probabilities of the channels-last input (coalesced); a
voxel's offsets are read only when one of its votes passes the threshold.  Votes go into
the float32 heatmaps with ``cuda.atomic.add``.

``peaks``: a block-level arg-max reduction in shared memory (each block grid-strides over a
part of one heatmap), then one block per heatmap reduces the partial results and its thread
0 applies the peak rule of :mod:`numvox.votes._peak` (the centroid of the small window), the
same device-compiled source as the CPU kernel's.  Ties resolve to the first voxel in C order,
NaN is skipped, as on the CPU.

Under Numba's CUDA simulator the same kernels run on host arrays with small launches.
"""

import math

import numpy as np
from numba import cuda

from .._shared._cuda_support import kernel_factory, launch_1d, unravel4
from .._shared.backend import cuda_simulated
from .._shared.halfprec import cuda_loaders
from ._peak import make_peak, window
from ._splat import channels, corner, in_reach, linear_cell

_load_f32, _load_f64 = cuda_loaders()
_channels = cuda.jit(device=True, inline=True)(channels)
_in_reach = cuda.jit(device=True, inline=True)(in_reach)
_linear_cell = cuda.jit(device=True, inline=True)(linear_cell)
_corner = cuda.jit(device=True, inline=True)(corner)
_window = cuda.jit(device=True, inline=True)(window)
_peak = cuda.jit(device=True, inline=True)(make_peak(_load_f64, _window))


def _sim_input(a):
    """The simulator copies kernel arguments to and from its fake device, which needs
    contiguous, writeable host buffers: give it a copy (simulator only; on a GPU the
    arrays are device arrays already)."""
    return np.array(a, order="C", copy=True) if isinstance(a, np.ndarray) else a


@cuda.jit
def _aggregate_kernel(P, pcode, O, ocode, thr, L, landmark_major, linear, out):
    B, X, Y, Z = P.shape[0], P.shape[1], P.shape[2], P.shape[3]
    fX, fY, fZ = np.float64(X), np.float64(Y), np.float64(Z)
    n = B * X * Y * Z
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, n, stride):
        b, x, y, z = unravel4(i, X, Y, Z)
        for l in range(L):
            p = _load_f64(P, (b, x, y, z, l + 1), pcode)
            if not (p >= thr):  # NaN never votes
                continue
            cx, cy, cz = _channels(l, L, landmark_major)
            tx = x + _load_f64(O, (b, x, y, z, cx), ocode)
            ty = y + _load_f64(O, (b, x, y, z, cy), ocode)
            tz = z + _load_f64(O, (b, x, y, z, cz), ocode)
            if not _in_reach(tx, ty, tz, fX, fY, fZ):
                continue
            if not linear:
                ix = int(math.floor(tx + 0.5))
                iy = int(math.floor(ty + 0.5))
                iz = int(math.floor(tz + 0.5))
                if ix >= 0 and ix < X and iy >= 0 and iy < Y and iz >= 0 and iz < Z:
                    cuda.atomic.add(out, (b, l, ix, iy, iz), np.float32(p))
            else:
                ix0, iy0, iz0, wx1, wy1, wz1 = _linear_cell(tx, ty, tz)
                for dx in range(2):
                    ix, wx = _corner(ix0, wx1, dx)
                    if ix < 0 or ix >= X:
                        continue
                    for dy in range(2):
                        iy, wy = _corner(iy0, wy1, dy)
                        if iy < 0 or iy >= Y:
                            continue
                        wxy = wx * wy
                        for dz in range(2):
                            iz, wz = _corner(iz0, wz1, dz)
                            if iz < 0 or iz >= Z:
                                continue
                            cuda.atomic.add(out, (b, l, ix, iy, iz), np.float32(p * (wxy * wz)))


def aggregate_cuda(P, pcode, O, ocode, thr, L, landmark_major, linear, out5):
    """Launch the scatter; ``out5`` (B, L, X, Y, Z) float32 is zero on entry."""
    n = int(np.prod(P.shape[:4]))
    # the simulator runs every thread in Python: at most two blocks of 32 there
    blocks, threads = launch_1d(n, threads=32, max_blocks=2) if cuda_simulated() else launch_1d(n)
    P, O = _sim_input(P), _sim_input(O)
    _aggregate_kernel[blocks, threads](
        P, np.int64(pcode), O, np.int64(ocode), np.float64(thr), np.int64(L), bool(landmark_major),
        bool(linear), out5,
    )
    if not cuda_simulated():  # pragma: no cover - needs a GPU
        cuda.synchronize()


# ------------------------------------------------------------------------- peaks -------
@kernel_factory
def _peak_kernels(threads):
    """(partial arg-max kernel, finishing kernel) for blocks of ``threads`` threads."""
    T = threads

    @cuda.jit(device=True, inline=True)
    def better(v2, i2, v1, i1):
        """True when candidate (v2, i2) beats (v1, i1): larger, or equal and earlier."""
        if i2 < 0:
            return False
        if i1 < 0:
            return True
        return v2 > v1 or (v2 == v1 and i2 < i1)

    @cuda.jit(device=True, inline=True)
    def block_reduce(sval, sidx, tid):
        s = T // 2
        while s > 0:
            if tid < s:
                if better(sval[tid + s], sidx[tid + s], sval[tid], sidx[tid]):
                    sval[tid] = sval[tid + s]
                    sidx[tid] = sidx[tid + s]
            cuda.syncthreads()
            s //= 2

    @cuda.jit
    def partial_argmax(H, code, pvals, pidx):
        sval = cuda.shared.array(T, np.float64)
        sidx = cuda.shared.array(T, np.int64)
        L, X, Y, Z = H.shape[1], H.shape[2], H.shape[3], H.shape[4]
        n = cuda.blockIdx.y
        b = n // L
        l = n - b * L
        tid = cuda.threadIdx.x
        m = X * Y * Z
        best = -math.inf
        bi = -1
        for i in range(cuda.blockIdx.x * T + tid, m, cuda.gridDim.x * T):
            z = i % Z
            t = i // Z
            y = t % Y
            x = t // Y
            v = _load_f64(H, (b, l, x, y, z), code)
            if v > best:  # NaN never wins; i grows, so ties keep the first
                best = v
                bi = i
        sval[tid] = best
        sidx[tid] = bi
        cuda.syncthreads()
        block_reduce(sval, sidx, tid)
        if tid == 0:
            pvals[n, cuda.blockIdx.x] = sval[0]
            pidx[n, cuda.blockIdx.x] = sidx[0]

    @cuda.jit
    def finish(H, code, pvals, pidx, radius, coords, values):
        sval = cuda.shared.array(T, np.float64)
        sidx = cuda.shared.array(T, np.int64)
        L = H.shape[1]
        n = cuda.blockIdx.x
        b = n // L
        l = n - b * L
        tid = cuda.threadIdx.x
        best = -math.inf
        bi = -1
        for j in range(tid, pvals.shape[1], T):
            if better(pvals[n, j], pidx[n, j], best, bi):
                best = pvals[n, j]
                bi = pidx[n, j]
        sval[tid] = best
        sidx[tid] = bi
        cuda.syncthreads()
        block_reduce(sval, sidx, tid)
        if tid == 0:
            _peak(H, code, b, l, sval[0], sidx[0], radius, coords, values, n)

    return partial_argmax, finish


def peaks_cuda(H, code, radius, coords, values):
    """Arg-max + centroid of each heatmap of ``H`` (B, L, X, Y, Z) into ``coords`` (B*L, 3)
    and ``values`` (B*L,)."""
    B, L, X, Y, Z = (int(s) for s in H.shape)
    N, m = B * L, X * Y * Z
    simulated = cuda_simulated()
    threads = 32 if simulated else 256
    nparts = max(1, min((m + threads - 1) // threads, 2 if simulated else 1024))
    if isinstance(H, np.ndarray):
        pvals = np.empty((N, nparts), np.float64)
        pidx = np.empty((N, nparts), np.int64)
    else:  # pragma: no cover - needs a GPU
        pvals = cuda.device_array((N, nparts), np.float64)
        pidx = cuda.device_array((N, nparts), np.int64)
    partial_argmax, finish = _peak_kernels(threads)
    H = _sim_input(H)
    partial_argmax[(nparts, N), threads](H, np.int64(code), pvals, pidx)
    finish[N, threads](H, np.int64(code), pvals, pidx, np.int64(radius), coords, values)
    if not simulated:  # pragma: no cover - needs a GPU
        cuda.synchronize()
