import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _sum(a):
    s = 0.0
    for i in prange(a.shape[0]):
        s += a[i]
    return s


def touch_parallel():
    """Run one tiny parallel function so Numba picks (and reports) its threading layer."""
    return _sum(np.ones(4))
