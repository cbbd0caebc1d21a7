"""CUDA kernels for steepest-descent labels and descent basins (imported lazily).

Labels: one block computes ``B x B x B`` outputs (B = 8 on a GPU, 4 under the simulator)
from a ``(B + 2)^3`` shared-memory tile with a one-voxel halo.  The block's threads load the
tile cooperatively in linear order, the last axis fastest, so consecutive threads read
consecutive addresses (coalesced); voxels outside the volume become ``+inf`` (never a
candidate, exactly as on the CPU).  ``syncthreads``, then each thread compares its voxel
with the 26 tile neighbours in ascending code order with strict ``>`` (smallest code wins
ties) in the compute dtype, scores ``(c - n) * w`` as on the CPU.  Non-finite centres are
counted with ``atomic.add`` (and not scored).  A difference of two finite floats overflows
(and infinite scores of different distance classes would tie) only when the centre is at
least half an ulp of the dtype's maximum (2**103 for float32, 2**970 for float64); centres
of at least half that are scored with both sides halved, ``(c * 0.5 - n * 0.5) * w``: exact
at that size, every score exactly half of the unscaled one, so the labels are the CPU's
(``_cpu.direct_tiles``), and no difference overflows (nor warns in the simulator).

64-bit integers have their own kernel: the tile holds the integers themselves
(out-of-volume neighbours are skipped by their coordinates), each distance class's smallest
value is found exactly, and ``c - m`` is taken exactly and rounded once to float64, as on
the CPU.

Basins: ``f[v] = v``; then rounds of (a) hooking: for every edge ``v -> t`` with
``f[v] != f[t]``, ``atomic.min(f, max, min)`` and a "changed" flag, and (b) pointer jumping
``f[v] = f[f[v]]``, until no edge has ``f[v] != f[t]``.  ``f`` only decreases and always
names a node of the same component, so at the fixed point every component carries its
smallest flat index.  Roots are then numbered in C order by a per-block shared-memory scan
plus a prefix sum of the block counts.
"""

import math

import numpy as np
from numba import cuda, float32, float64, int32, int64, uint64

from numvox._shared._cuda_support import kernel_factory, launch_1d, unravel4
from numvox._shared.backend import cuda_simulated
from numvox._shared.halfprec import cuda_loaders

from ._rules import W2, W3

_load_f32, _load_f64 = cuda_loaders()
SCAN_THREADS = 256


@cuda.jit(device=True, inline=True)
def _tile_origin(n0, n1, n2, B):
    """Volume position of the first voxel of this block's haloed tile: the block's ``B**3``
    output voxels, in C order of blocks, start one voxel further along each axis."""
    g0 = (n0 + B - 1) // B
    g1 = (n1 + B - 1) // B
    g2 = (n2 + B - 1) // B
    _, b0, b1, b2 = unravel4(cuda.blockIdx.x, g0, g1, g2)
    return b0 * B - 1, b1 * B - 1, b2 * B - 1


def _block_edge():
    return 4 if cuda_simulated() else 8


@kernel_factory
def _labels_kernel(cdtype_name, B):
    """The labels kernel for compute dtype ``cdtype_name`` and ``B x B x B`` output blocks."""
    nbtype = float32 if cdtype_name == "float32" else float64
    load = _load_f32 if nbtype == float32 else _load_f64
    H = B + 2
    NT = B * B * B

    @cuda.jit
    def kernel(V, code, out, bad, w2, w3, ninf, pinf, half, one, big):
        tile = cuda.shared.array((H, H, H), nbtype)
        n0, n1, n2 = V.shape
        o0, o1, o2 = _tile_origin(n0, n1, n2, B)
        tid = cuda.threadIdx.x
        for e in range(tid, H * H * H, NT):  # coalesced: the last axis is fastest
            p = e // (H * H)
            q = (e // H) % H
            r = e % H
            ii = o0 + p
            jj = o1 + q
            kk = o2 + r
            if ii >= 0 and ii < n0 and jj >= 0 and jj < n1 and kk >= 0 and kk < n2:
                tile[p, q, r] = load(V, (ii, jj, kk), code)
            else:
                tile[p, q, r] = pinf
        cuda.syncthreads()
        tz = tid // (B * B)
        ty = (tid // B) % B
        tx = tid % B
        i = o0 + 1 + tz
        j = o1 + 1 + ty
        k = o2 + 1 + tx
        if i < n0 and j < n1 and k < n2:
            c = tile[tz + 1, ty + 1, tx + 1]
            if math.isinf(c) or math.isnan(c):  # counted; the host raises (no inf - inf here)
                cuda.atomic.add(bad, 0, 1)
                out[i, j, k] = 13
            else:
                # a centre this large may have differences that overflow: both sides halved
                # (exact at that size, every score exactly halved, none infinite)
                h = half if abs(c) >= big else one
                ch = c * h
                best = ninf
                lab = 13
                for da in range(3):
                    for db in range(3):
                        for dc in range(3):
                            code_k = da * 9 + db * 3 + dc
                            if code_k != 13:
                                nz = (da != 1) + (db != 1) + (dc != 1)
                                s = ch - tile[tz + da, ty + db, tx + dc] * h
                                if nz == 2:
                                    s = s * w2
                                elif nz == 3:
                                    s = s * w3
                                if s > best:
                                    best = s
                                    lab = code_k
                if best < 0:
                    lab = 13
                out[i, j, k] = lab

    return kernel


@kernel_factory
def _labels_kernel_int64(dtype_name, B):
    """The labels kernel for 64-bit integers (``dtype_name`` "int64" or "uint64")."""
    nbtype = int64 if dtype_name == "int64" else uint64
    H = B + 2
    NT = B * B * B

    @cuda.jit
    def kernel(V, out, w2, w3, ninf):
        tile = cuda.shared.array((H, H, H), nbtype)
        n0, n1, n2 = V.shape
        o0, o1, o2 = _tile_origin(n0, n1, n2, B)
        tid = cuda.threadIdx.x
        for e in range(tid, H * H * H, NT):  # coalesced: the last axis is fastest
            p = e // (H * H)
            q = (e // H) % H
            r = e % H
            ii = o0 + p
            jj = o1 + q
            kk = o2 + r
            if ii >= 0 and ii < n0 and jj >= 0 and jj < n1 and kk >= 0 and kk < n2:
                tile[p, q, r] = V[ii, jj, kk]
            else:
                tile[p, q, r] = 0  # never read: out-of-volume neighbours are skipped
        cuda.syncthreads()
        tz = tid // (B * B)
        ty = (tid // B) % B
        tx = tid % B
        i = o0 + 1 + tz
        j = o1 + 1 + ty
        k = o2 + 1 + tx
        if i < n0 and j < n1 and k < n2:
            c = tile[tz + 1, ty + 1, tx + 1]
            vf = c
            ve = c
            vc = c
            kf = -1
            ke = -1
            kc = -1
            for da in range(3):
                for db in range(3):
                    for dc in range(3):
                        code_k = da * 9 + db * 3 + dc
                        a0 = i + da - 1
                        a1 = j + db - 1
                        a2 = k + dc - 1
                        if code_k != 13 and a0 >= 0 and a0 < n0 and a1 >= 0 and a1 < n1 and a2 >= 0 and a2 < n2:
                            x = tile[tz + da, ty + db, tx + dc]
                            nz = (da != 1) + (db != 1) + (dc != 1)
                            if nz == 1:
                                if kf < 0 or x < vf:
                                    vf = x
                                    kf = code_k
                            elif nz == 2:
                                if ke < 0 or x < ve:
                                    ve = x
                                    ke = code_k
                            elif kc < 0 or x < vc:
                                vc = x
                                kc = code_k
            scores = cuda.local.array(3, float64)
            codes = cuda.local.array(3, int64)
            scores[0] = _exact_diff(c, vf) if kf >= 0 else ninf
            scores[1] = _exact_diff(c, ve) * w2 if ke >= 0 else ninf
            scores[2] = _exact_diff(c, vc) * w3 if kc >= 0 else ninf
            codes[0] = kf
            codes[1] = ke
            codes[2] = kc
            # the best class (at least the centre's own 0), ties to the smallest code, 13 if
            # every class is below 0: the CPU's rule
            best = max(max(max(scores[0], scores[1]), scores[2]), 0.0)
            lab = 45
            for m in range(3):
                if scores[m] == best and codes[m] < lab:
                    lab = codes[m]
            out[i, j, k] = 13 if lab == 45 else lab

    return kernel


@cuda.jit(device=True, inline=True)
def _magnitude(hi, lo):
    """``float64(hi - lo)`` for 64-bit integers ``hi >= lo``, exact and then rounded once,
    with no wrapping arithmetic (which the simulator would report as overflow)."""
    if lo >= 0 or hi < 0:  # same sign: the difference fits the dtype
        return float64(hi - lo)
    return float64(uint64(hi) + uint64(-(lo + 1)) + uint64(1))  # hi >= 0 > lo: below 2**64


@cuda.jit(device=True, inline=True)
def _exact_diff(c, m):
    """``float64(c - m)`` of two 64-bit integers, exact and then rounded once."""
    if c >= m:
        return _magnitude(c, m)
    return -_magnitude(m, c)


def launch_labels(V, code, out, cdtype, *, device_arrays):
    """Run the labels kernel; returns the number of non-finite values."""
    cdtype = np.dtype(cdtype)
    vdtype = np.dtype(V.dtype)
    B = _block_edge()
    n0, n1, n2 = V.shape
    blocks = (-(-n0 // B)) * (-(-n1 // B)) * (-(-n2 // B))
    # Simulator: host input, passed as input-only (never copied back; it may be read-only)
    # and contiguous (the simulator's transfer needs one buffer).  Real GPUs get device arrays.
    src = V if device_arrays else cuda.In(np.ascontiguousarray(V))
    if code == 0 and vdtype.kind in "iu" and vdtype.itemsize == 8:
        kernel = _labels_kernel_int64(vdtype.name, B)
        kernel[blocks, B * B * B](src, out, np.float64(W2), np.float64(W3), np.float64(-np.inf))
        return 0  # integers are finite
    bad_host = np.zeros(1, np.int64)
    bad = cuda.to_device(bad_host) if device_arrays else bad_host
    t = cdtype.type
    kernel = _labels_kernel(cdtype.name, B)
    big = t(2.0**102 if cdtype == np.float32 else 2.0**969)
    kernel[blocks, B * B * B](src, np.int64(code), out, bad, t(W2), t(W3), t(-np.inf), t(np.inf), t(0.5), t(1), big)
    if device_arrays:  # pragma: no cover - needs a GPU
        bad_host = bad.copy_to_host()
    return int(bad_host[0])


@cuda.jit
def _zero_faces_kernel(out):  # pragma: no cover - real GPU only (the simulator uses NumPy)
    n0, n1, n2 = out.shape
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for v in range(start, n0 * n1 * n2, stride):
        i = v // (n1 * n2)
        j = (v // n2) % n1
        k = v % n2
        if i == 0 or j == 0 or k == 0 or i == n0 - 1 or j == n1 - 1 or k == n2 - 1:
            out[i, j, k] = 0


def zero_faces(out):  # pragma: no cover - needs a GPU
    blocks, threads = launch_1d(out.size)
    _zero_faces_kernel[blocks, threads](out)


# -- basins ----------------------------------------------------------------------------


@cuda.jit
def _init_kernel(f):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for v in range(start, f.shape[0], stride):
        f[v] = v


@cuda.jit(device=True, inline=True)
def _target(v, k, n1, n2):
    return v + (k // 9 - 1) * n1 * n2 + ((k // 3) % 3 - 1) * n2 + (k % 3 - 1)


@cuda.jit
def _hook_kernel(L, f, n1, n2, changed):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for v in range(start, f.shape[0], stride):
        k = int64(L[v])
        if k != 13:
            t = _target(v, k, n1, n2)
            fv = f[v]
            ft = f[t]
            if fv != ft:
                changed[0] = 1
                if fv < ft:
                    cuda.atomic.min(f, ft, fv)
                else:
                    cuda.atomic.min(f, fv, ft)


@cuda.jit
def _jump_kernel(f, changed):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for v in range(start, f.shape[0], stride):
        p = f[v]
        pp = f[p]
        if pp != p:
            f[v] = pp
            changed[0] = 1


@cuda.jit
def _count_roots_kernel(f, counts):
    """One block per ``SCAN_THREADS`` consecutive voxels: how many roots each holds."""
    v = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if v < f.shape[0] and f[v] == v:
        cuda.atomic.add(counts, cuda.blockIdx.x, 1)


@cuda.jit
def _number_roots_kernel(f, base):
    """Roots get ``-(id)``: ``base[block]`` plus an in-block scan of the root flags."""
    flags = cuda.shared.array(SCAN_THREADS, int32)
    tid = cuda.threadIdx.x
    v = cuda.blockIdx.x * cuda.blockDim.x + tid
    is_root = 0
    if v < f.shape[0] and f[v] == v:
        is_root = 1
    flags[tid] = is_root
    cuda.syncthreads()
    offset = 1
    while offset < SCAN_THREADS:  # Hillis-Steele inclusive scan
        add = 0
        if tid >= offset:
            add = flags[tid - offset]
        cuda.syncthreads()
        flags[tid] += add
        cuda.syncthreads()
        offset *= 2
    if is_root:
        f[v] = -(base[cuda.blockIdx.x] + flags[tid])


@cuda.jit
def _take_root_id_kernel(f):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for v in range(start, f.shape[0], stride):
        r = f[v]
        if r >= 0:
            f[v] = -f[r]


@cuda.jit
def _flip_kernel(f):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for v in range(start, f.shape[0], stride):
        if f[v] < 0:
            f[v] = -f[v]


def launch_basins(labels, out, *, device_arrays):
    """Basins from labels (both on the call's backend); ``out`` (int32) is the parent array."""
    n0, n1, n2 = labels.shape
    n = n0 * n1 * n2
    L = labels.reshape(n)
    f = out.reshape(n)
    blocks, threads = launch_1d(n, threads=64 if cuda_simulated() else 256)
    _init_kernel[blocks, threads](f)
    flag_host = np.zeros(1, np.int32)
    while True:
        flag = cuda.to_device(flag_host) if device_arrays else np.zeros(1, np.int32)
        _hook_kernel[blocks, threads](L, f, np.int64(n1), np.int64(n2), flag)
        hooked = int(flag.copy_to_host()[0] if device_arrays else flag[0])
        while True:
            jflag = cuda.to_device(flag_host) if device_arrays else np.zeros(1, np.int32)
            _jump_kernel[blocks, threads](f, jflag)
            if not int(jflag.copy_to_host()[0] if device_arrays else jflag[0]):
                break
        if not hooked:
            break
    nblocks = -(-n // SCAN_THREADS)
    counts_host = np.zeros(nblocks, np.int32)
    counts = cuda.to_device(counts_host) if device_arrays else counts_host
    _count_roots_kernel[nblocks, SCAN_THREADS](f, counts)
    if device_arrays:  # pragma: no cover - needs a GPU
        counts_host = counts.copy_to_host()
    base_host = np.zeros(nblocks, np.int32)
    np.cumsum(counts_host[:-1], out=base_host[1:])
    base = cuda.to_device(base_host) if device_arrays else base_host
    _number_roots_kernel[nblocks, SCAN_THREADS](f, base)
    _take_root_id_kernel[blocks, threads](f)
    _flip_kernel[blocks, threads](f)
    if device_arrays:  # pragma: no cover - needs a GPU
        cuda.synchronize()
    return out
