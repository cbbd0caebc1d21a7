"""Small CUDA helpers shared by the operations' CUDA modules (imported only for CUDA calls)."""

import functools

from numba import cuda

THREADS_1D = 256


def launch_1d(n, threads=THREADS_1D, max_blocks=65535 * 8):
    """``(blocks, threads)`` for a grid-stride loop over ``n`` items."""
    blocks = max(1, min((int(n) + threads - 1) // threads, max_blocks))
    return blocks, threads


@cuda.jit(device=True, inline=True)
def unravel4(i, n1, n2, n3):
    """``(a, b, c, d)``: the C-order position of flat index ``i`` in a grid ``(., n1, n2, n3)``
    (the one rule by which the CUDA kernels map a thread or block number to its item)."""
    d = i % n3
    t = i // n3
    c = t % n2
    t = t // n2
    return t // n1, t % n1, c, d


@cuda.jit
def fill_zero_kernel(flat):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, flat.shape[0], stride):
        flat[i] = 0


def kernel_factory(build):
    """Memoise a CUDA kernel factory: ``build(*key)`` compiles (specialises) kernels for one
    key (dtype codes, tile sizes, ...) and runs once per distinct key in a process.  Every
    CUDA module builds its specialised kernels through this one cache."""
    return functools.cache(build)
