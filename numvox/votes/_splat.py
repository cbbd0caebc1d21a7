"""The trilinear split of a vote, written once for the CPU, Dask and CUDA kernels.

:func:`linear_cell` is plain Python: the CPU kernels use it compiled with ``@njit``
(:data:`linear_cell_cpu`), the CUDA kernel as a device function (``cuda.jit(device=True)``
of the same function, built in :mod:`numvox.votes._cuda`).
"""

import math

from numba import njit


def linear_cell(tx, ty, tz):
    """``(ix0, iy0, iz0, wx1, wy1, wz1)`` for a vote at ``(tx, ty, tz)``: the lower corner of
    the 2x2x2 cell around it and the weights of the upper corner along each axis (the lower
    one gets ``1 - w``).  Callers range-check the position first (NaN and huge values must
    never reach the integer conversion)."""
    ix0 = math.floor(tx)
    iy0 = math.floor(ty)
    iz0 = math.floor(tz)
    return ix0, iy0, iz0, tx - ix0, ty - iy0, tz - iz0


linear_cell_cpu = njit(inline="always", cache=True)(linear_cell)
