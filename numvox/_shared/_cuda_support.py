"""Small CUDA helpers shared by the operations' CUDA modules (imported only for CUDA calls)."""

import functools

from numba import cuda

THREADS_1D = 256


def launch_1d(n, threads=THREADS_1D, max_blocks=65535 * 8):
    """``(blocks, threads)`` for a grid-stride loop over ``n`` items."""
    blocks = max(1, min((int(n) + threads - 1) // threads, max_blocks))
    return blocks, threads


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
