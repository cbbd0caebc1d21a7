"""Where a vote lands, written once for the CPU, Dask-block and CUDA kernels.

The functions are plain Python: the CPU kernels (in-memory and Dask-block, in
:mod:`numvox.votes._cpu`) use them compiled with ``@njit(inline="always")`` (the ``*_cpu``
names below), the CUDA kernel (:mod:`numvox.votes._cuda`) as device functions
(``cuda.jit(device=True)``), so every kernel applies the same rule:

* a vote of landmark ``l`` reads its offsets from the channels :func:`channels`;
* its position is ``source index + offset`` in float64;
* ``"nearest"``: it lands on ``floor(p + 0.5)`` per axis when that voxel is inside the volume
  (:func:`nearest_voxel`, decided in float64 before any integer conversion; the CUDA kernel,
  which has no float ``floor`` ufunc, checks :func:`in_reach` first and compares the integer
  indices: the same decision);
* ``"linear"``: when :func:`in_reach` holds, its weight is split over the 2x2x2 cell
  :func:`linear_cell`, each corner (:func:`corner`) counting only inside the volume.

NaN and infinite positions fail every range check, so they never reach an integer
conversion.
"""

import math

import numpy as np
from numba import njit


def channels(l, L, landmark_major):
    """The offset channels ``(x, y, z)`` of landmark ``l`` of ``L``."""
    if landmark_major:
        return 3 * l, 3 * l + 1, 3 * l + 2
    return l, L + l, 2 * L + l


def nearest_voxel(tx, ty, tz, fX, fY, fZ):
    """``(ok, fx, fy, fz)``: the voxel ``floor(p + 0.5)`` of a vote at ``(tx, ty, tz)`` as
    float64 indices and whether it lies in the ``fX x fY x fZ`` volume (branch-free: the CPU
    kernel must not branch on offsets that miss the cache)."""
    fx = np.floor(tx + 0.5)
    fy = np.floor(ty + 0.5)
    fz = np.floor(tz + 0.5)
    ok = (fx >= 0.0) & (fx < fX) & (fy >= 0.0) & (fy < fY) & (fz >= 0.0) & (fz < fZ)
    return ok, fx, fy, fz


def in_reach(tx, ty, tz, fX, fY, fZ):
    """Whether a vote at ``(tx, ty, tz)`` can touch the volume: the open box
    ``(-1, n)`` per axis (NaN fails)."""
    return tx > -1.0 and tx < fX and ty > -1.0 and ty < fY and tz > -1.0 and tz < fZ


def linear_cell(tx, ty, tz):
    """``(ix0, iy0, iz0, wx1, wy1, wz1)`` for a vote at ``(tx, ty, tz)``: the lower corner of
    the 2x2x2 cell around it and the weights of the upper corner along each axis (the lower
    one gets ``1 - w``).  Callers check :func:`in_reach` first (NaN and huge values must
    never reach the integer conversion)."""
    ix0 = math.floor(tx)
    iy0 = math.floor(ty)
    iz0 = math.floor(tz)
    return ix0, iy0, iz0, tx - ix0, ty - iy0, tz - iz0


def corner(i0, w1, d):
    """Index and weight along one axis of the lower (``d = 0``) or upper (``d = 1``) corner
    of a cell from :func:`linear_cell`; a corner's weight is the product of its three axis
    weights, multiplied as ``p * ((wx * wy) * wz)`` and rounded to float32."""
    return i0 + d, (w1 if d else 1.0 - w1)


channels_cpu = njit(inline="always", cache=True)(channels)
nearest_voxel_cpu = njit(inline="always", cache=True)(nearest_voxel)
in_reach_cpu = njit(inline="always", cache=True)(in_reach)
linear_cell_cpu = njit(inline="always", cache=True)(linear_cell)
corner_cpu = njit(inline="always", cache=True)(corner)
