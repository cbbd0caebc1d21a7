"""CUDA kernels of :func:`numvox.correlate_batch` (imported only for CUDA calls).

``direct`` is a shared-memory tiled kernel.  A thread block owns a tile of outputs (up to
``T`` positions: ``T // tile_x`` output rows x ``tile_x`` positions along the last axis) of one
image and a block of ``KB`` filters (grid: tiles x images x filter blocks).  For every filter
tap row (channel, i0, i1, i2) and chunk of ``CH`` taps along the last axis, the block loads the
image segments under its tile *plus halo* (``tile_x + CH - 1`` values per row) and the
``KB x CH`` filter weights into shared memory once; each thread then accumulates its output
position against all ``KB`` filters from shared memory.  With ``reduce`` the block reduces its
values to one (max, first flat index) per filter in shared memory (a tree reduction) and
writes it to a small ``(N, K, tiles)`` partial array that the host combines.
"""

import math

import numpy as np
from numba import cuda, float32, float64, int64

from numvox._shared._cuda_support import kernel_factory, launch_1d
from numvox._shared.arrays import to_host
from numvox._shared.backend import cuda_simulated
from numvox._shared.halfprec import cuda_loaders, kernel_view

from ._direct import combine_partials
from ._normalize import centred_filters, window_variance
from ._rules import BIG_INDEX, canonical, channels_first, pad4

KB = 8  # filters per block
CH = 16  # taps along the last axis per shared-memory load
MAXT = 64  # threads per block (a power of two)
PARTIAL_BYTES = 64 * 2**20


@kernel_factory
def _kernels(f64):
    """The tiled direct kernel accumulating in float64 (``f64``) or float32."""
    load_f32, load_f64 = cuda_loaders()
    load = load_f64 if f64 else load_f32
    acc_t = float64 if f64 else float32
    SEG = MAXT * CH  # >= T + rows * (CH - 1) for any tile shape

    @cuda.jit
    def direct(img, icode, filt, lo, oshape, tile_x, out, pval, pidx, reduce_flag, var, ssd, norm_flag, eps):
        seg = cuda.shared.array(SEG, acc_t)
        fsh = cuda.shared.array((KB, CH), acc_t)
        rv = cuda.shared.array(MAXT, acc_t)
        ri = cuda.shared.array(MAXT, int64)
        acc = cuda.local.array(KB, acc_t)
        tid = cuda.threadIdx.x
        T = cuda.blockDim.x
        bx = cuda.blockIdx.x
        n = cuda.blockIdx.y
        k0 = cuda.blockIdx.z * KB
        C = img.shape[1]
        D0, D1, D2, D3 = img.shape[2], img.shape[3], img.shape[4], img.shape[5]
        K = filt.shape[0]
        s0, s1, s2, s3 = filt.shape[2], filt.shape[3], filt.shape[4], filt.shape[5]
        O0, O1, O2, O3 = oshape[0], oshape[1], oshape[2], oshape[3]
        R = O0 * O1 * O2
        rows = T // tile_x
        xtiles = (O3 + tile_x - 1) // tile_x
        rb = bx // xtiles
        xt = bx - rb * xtiles
        ry = tid // tile_x
        tx = tid - ry * tile_x
        r = rb * rows + ry
        x0 = xt * tile_x
        o3 = x0 + tx
        valid = r < R and o3 < O3
        rr = min(r, R - 1)
        o0 = rr // (O1 * O2)
        o1 = (rr // O2) % O1
        o2 = rr % O2
        for kk in range(KB):
            acc[kk] = 0
        for c in range(C):
            for i0 in range(s0):
                y0 = o0 + lo[0] + i0
                for i1 in range(s1):
                    y1 = o1 + lo[1] + i1
                    for i2 in range(s2):
                        y2 = o2 + lo[2] + i2
                        rowok = r < R and y0 >= 0 and y0 < D0 and y1 >= 0 and y1 < D1 and y2 >= 0 and y2 < D2
                        for i3c in range(0, s3, CH):
                            chl = min(CH, s3 - i3c)
                            seglen = tile_x + chl - 1
                            cuda.syncthreads()  # the previous chunk's reads are done
                            j = tx
                            while j < seglen:  # image segment + halo of this block row
                                p = x0 + lo[3] + i3c + j
                                v = acc_t(0)
                                if rowok and p >= 0 and p < D3:
                                    v = load(img, (n, c, y0, y1, y2, p), icode)
                                seg[ry * seglen + j] = v
                                j += tile_x
                            q = tid
                            while q < KB * CH:  # the filter block's weights of this chunk
                                kk = q // CH
                                jj = q - kk * CH
                                w = acc_t(0)
                                if k0 + kk < K and jj < chl:
                                    w = filt[k0 + kk, c, i0, i1, i2, i3c + jj]
                                fsh[kk, jj] = w
                                q += T
                            cuda.syncthreads()
                            if valid:
                                for jj in range(chl):
                                    v = seg[ry * seglen + tx + jj]
                                    for kk in range(KB):
                                        acc[kk] += fsh[kk, jj] * v
        for kk in range(KB):
            k = k0 + kk
            if k < K:  # uniform over the block
                v = acc[kk]
                if norm_flag != 0 and valid:
                    d = math.sqrt(max(var[n, o0, o1, o2, o3], 0.0) * ssd[k])
                    v = v / d if d > eps else acc_t(0)
                if reduce_flag == 0:
                    if valid:
                        out[n, k, o0, o1, o2, o3] = v
                else:
                    cuda.syncthreads()
                    rv[tid] = v if valid else -math.inf
                    ri[tid] = rr * O3 + o3 if valid else BIG_INDEX
                    cuda.syncthreads()
                    st = T // 2
                    while st > 0:
                        if tid < st:
                            a = rv[tid + st]
                            b = rv[tid]
                            if a > b or (a == b and ri[tid + st] < ri[tid]):
                                rv[tid] = a
                                ri[tid] = ri[tid + st]
                        cuda.syncthreads()
                        st //= 2
                    if tid == 0:
                        pval[n, k, bx] = rv[0]
                        pidx[n, k, bx] = ri[0]

    return direct


def _pow2ceil(x):
    return 1 << max(0, int(x - 1).bit_length())


def _cupy():  # pragma: no cover - needs a GPU
    import cupy

    return cupy


def launch_direct(call, A, B, geom, out_dtype, reduce, normalize, res, values, positions, bar):
    """Run the tiled kernel over blocks of images and filters; fill ``res`` or ``values``/``positions``."""
    dev = call.device_arrays
    ssd = np.ones(1, dtype=np.float64)
    img_cf = None
    if normalize:
        # zero-mean filters (a small copy of the filter bank) and their sums of squares
        xp = _cupy() if dev else np
        B, ssd = centred_filters(xp, xp.asarray(B) if dev else B, out_dtype)
        img_cf = channels_first(xp, xp.asarray(A) if dev else A, geom)
    img6, icode = kernel_view(canonical(A, geom))
    N, K = geom.N, geom.K
    O, lo, s = geom.O, geom.lo, geom.s
    O4 = pad4(O, 1)
    kernel = _kernels(bool(np.dtype(out_dtype) == np.float64))
    T = 16 if cuda_simulated() else MAXT
    tile_x = min(T, _pow2ceil(O4[3]))
    rows = T // tile_x
    R = O4[0] * O4[1] * O4[2]
    ntiles = -(-R // rows) * -(-O4[3] // tile_x)
    eps = float(np.finfo(out_dtype).eps)

    def put(x):
        return cuda.to_device(np.ascontiguousarray(x)) if dev else np.ascontiguousarray(x)

    flt = put(np.array(canonical(to_host(B), geom), dtype=out_dtype, order="C"))
    lo_d = put(np.array(pad4(lo, 0), dtype=np.int64))
    o_d = put(np.array(O4, dtype=np.int64))
    ssd_d = put(np.asarray(ssd, dtype=np.float64))
    dummy_var = put(np.zeros((1,) * 5, dtype=np.float64))
    dummy_out = put(np.zeros((1,) * 6, dtype=out_dtype))
    dummy_pv = put(np.zeros((1, 1, 1), dtype=out_dtype))
    dummy_pi = put(np.zeros((1, 1, 1), dtype=np.int64))
    out6 = res.reshape(N, K, *O4) if reduce is None else None

    if reduce is None:
        kg, bn = K, min(N, 65535)
    else:
        kg = int(min(K, max(KB, (PARTIAL_BYTES // (ntiles * 16)) // KB * KB)))
        bn = int(max(1, min(N, 65535, PARTIAL_BYTES // (kg * ntiles * 16))))
        hv = np.empty((N, K), dtype=out_dtype)
        hi = np.empty((N, K), dtype=np.int64)
    if normalize:
        bn = int(max(1, min(bn, PARTIAL_BYTES // (8 * 4 * max(1, math.prod(O))))))
    for n0 in range(0, N, bn):
        n1 = min(N, n0 + bn)
        b = n1 - n0
        if normalize:
            if dev:  # pragma: no cover - needs a GPU
                var = _device_variance(img_cf[n0:n1], s, lo, O).reshape(b, *O4)
            else:
                var = window_variance(np, img_cf[n0:n1], s, lo, O).reshape(b, *O4)
        else:
            var = dummy_var
        for k0 in range(0, K, kg):
            k1 = min(K, k0 + kg)
            grid = (ntiles, b, -(-(k1 - k0) // KB))
            if reduce is None:
                o, pv, pi = out6[n0:n1, k0:k1], dummy_pv, dummy_pi
            else:
                o = dummy_out
                pv = call.empty((b, k1 - k0, ntiles), out_dtype)
                pi = call.empty((b, k1 - k0, ntiles), np.int64)
            # the simulator copies every NumPy argument back after a launch: hand it a copy of
            # the (read-only) image view; on a GPU the view itself is passed
            img_arg = img6[n0:n1] if dev else np.array(img6[n0:n1], order="C")
            kernel[grid, T](img_arg, np.int64(icode), flt[k0:k1], lo_d, o_d, np.int64(tile_x), o, pv, pi,
                            np.int64(reduce is not None), var, ssd_d[k0:k1] if normalize else ssd_d,
                            np.int64(normalize), np.float64(eps))
            if reduce is not None:
                pvh = pv.copy_to_host() if dev else pv
                pih = pi.copy_to_host() if dev else pi
                hv[n0:n1, k0:k1], hi[n0:n1, k0:k1] = combine_partials(pvh, pih)
            bar.update(b * (k1 - k0))
    if dev:  # pragma: no cover - needs a GPU
        cuda.synchronize()
    if reduce is not None:
        hp = np.stack(np.unravel_index(hi, tuple(O)), axis=-1).astype(np.int64)
        if dev:  # pragma: no cover - needs a GPU
            values.copy_to_device(hv)
            if positions is not None:
                positions.copy_to_device(hp)
        else:
            values[...] = hv
            if positions is not None:
                positions[...] = hp


def _device_variance(block, s, lo, O):  # pragma: no cover - needs a GPU
    try:
        import cupy
    except ImportError:
        return cuda.to_device(window_variance(np, to_host(block), s, lo, O))
    return cuda.as_cuda_array(window_variance(cupy, cupy.asarray(block), s, lo, O))


def scan_values_device(arr, code):  # pragma: no cover - needs a GPU
    """``(nonfinite_count, max_abs)`` of a 6-D device array, on the device."""
    kernel = _scan_kernel()
    stats = cuda.to_device(np.zeros(2, dtype=np.float64))
    blocks, threads = launch_1d(int(np.prod(arr.shape)), threads=256, max_blocks=65535 * 4)
    kernel[blocks, threads](arr, np.int64(code), stats)
    host = stats.copy_to_host()
    return int(host[0]), float(host[1])


@kernel_factory
def _scan_kernel():  # pragma: no cover - needs a GPU
    """The grid-stride scan for non-finite values and the largest magnitude."""
    _, load_f64 = cuda_loaders()

    @cuda.jit
    def scan(a, code, stats):
        size = a.shape[0] * a.shape[1] * a.shape[2] * a.shape[3] * a.shape[4] * a.shape[5]
        i = cuda.grid(1)
        while i < size:
            rest = i
            i5 = rest % a.shape[5]
            rest //= a.shape[5]
            i4 = rest % a.shape[4]
            rest //= a.shape[4]
            i3 = rest % a.shape[3]
            rest //= a.shape[3]
            i2 = rest % a.shape[2]
            rest //= a.shape[2]
            i1 = rest % a.shape[1]
            i0 = rest // a.shape[1]
            v = load_f64(a, (i0, i1, i2, i3, i4, i5), code)
            if math.isinf(v) or math.isnan(v):
                cuda.atomic.add(stats, 0, 1.0)
            else:
                cuda.atomic.max(stats, 1, abs(v))
            i += cuda.gridsize(1)

    return scan
