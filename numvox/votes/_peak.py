"""What :func:`numvox.heatmap_peaks` reports for one heatmap once its arg-max is known,
written once for the CPU and CUDA kernels.

:func:`make_peak` returns the rule as a plain Python function over a loader (``load(a, i,
code)``: ``float64(a[i])``, decoding float16 / bfloat16 bits); the CPU kernel
(:mod:`numvox.votes._cpu`) compiles it with ``@njit(inline="always")`` over
:func:`numvox._shared.halfprec.load_f64` (``peak_cpu`` below), the CUDA kernel
(:mod:`numvox.votes._cuda`) as a device function over the CUDA loader, so both backends
apply the same rule:

* a heatmap without voxels (an empty spatial axis): value NaN, coordinates NaN;
* no maximum (only NaN / -inf): value 0, coordinates NaN;
* a maximum that is not positive: that value, coordinates NaN;
* a maximum of +inf: the arg-max voxel itself (the first +inf in C order);
* otherwise the weighted centroid (weights ``max(v, 0)``, NaN skipped) of the window of
  half-width ``radius`` around the arg-max voxel, clipped at the borders, summed in float64.
  Sums that overflow float64 (values near its maximum) are recomputed with the weights
  multiplied by the power of two that brings the maximum into ``[0.5, 1)`` (exact, and the
  sums then cannot overflow): the second pass runs only for such windows, so the
  coordinates of a positive maximum are always finite.
"""

import math

from numba import njit

from .._shared.halfprec import load_f64


def window(i, radius, n):
    """``[lo, hi)``: the window of half-width ``radius`` around index ``i``, clipped to
    ``[0, n)``.  Plain comparisons rather than the ``max`` / ``min`` builtins: in an
    offline PTX build (Numba 0.68's CUDA target) those resolved to a star-argument overload
    that failed to compile."""
    lo = i - radius
    hi = i + radius + 1
    return (lo if lo > 0 else 0), (hi if hi < n else n)


def make_peak(load, clipped):
    """The rule over the loader ``load``: ``peak(H, code, b, l, best, bi, radius, coords,
    values, n)`` writes ``coords[n, :]`` and ``values[n]`` for heatmap ``H[b, l]`` (``H``:
    B, L, X, Y, Z kernel view with half-precision ``code``), whose first maximum in C order
    is ``best`` at the flat index ``bi`` (``-1``: no maximum).  ``clipped`` is
    :func:`window` compiled for the same target."""

    def peak(H, code, b, l, best, bi, radius, coords, values, n):
        X, Y, Z = H.shape[2], H.shape[3], H.shape[4]
        coords[n, 0] = math.nan
        coords[n, 1] = math.nan
        coords[n, 2] = math.nan
        if X * Y * Z == 0:
            values[n] = math.nan
            return
        if bi < 0:  # only NaN / -inf
            values[n] = 0.0
            return
        values[n] = best
        if not (best > 0.0):
            return
        bz = bi % Z
        by = (bi // Z) % Y
        bx = bi // (Y * Z)
        if best == math.inf:
            coords[n, 0] = bx
            coords[n, 1] = by
            coords[n, 2] = bz
            return
        x0, x1 = clipped(bx, radius, X)
        y0, y1 = clipped(by, radius, Y)
        z0, z1 = clipped(bz, radius, Z)
        scale = 1.0  # exact: the first pass is the plain float64 centroid
        for _ in range(2):
            sw = 0.0
            sx = 0.0
            sy = 0.0
            sz = 0.0
            for x in range(x0, x1):
                for y in range(y0, y1):
                    for z in range(z0, z1):
                        v = load(H, (b, l, x, y, z), code)
                        if v > 0.0:
                            w = v * scale
                            sw += w
                            sx += w * x
                            sy += w * y
                            sz += w * z
            if sx < math.inf and sy < math.inf and sz < math.inf and sw < math.inf:
                break
            # the sums overflowed float64: again, the weights scaled by the power of two
            # that brings the maximum into [0.5, 1) (exact; the sums then cannot overflow)
            scale = math.ldexp(1.0, -math.frexp(best)[1])
        coords[n, 0] = sx / sw
        coords[n, 1] = sy / sw
        coords[n, 2] = sz / sw

    return peak


window_cpu = njit(inline="always", cache=True)(window)
peak_cpu = njit(inline="always", cache=True)(make_peak(load_f64, window_cpu))
