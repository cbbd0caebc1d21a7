"""Window statistics for ``normalize=True`` (zero-normalised cross-correlation).

With ``n`` values under a filter, ``ncc = corr(x, f - mean(f)) / sqrt(var_n(x) * ssd(f))``
where ``var_n(x) = sum x**2 - (sum x)**2 / n`` over the image window (out-of-image values are
0 and count in ``n``) and ``ssd(f) = sum (f - mean f)**2``: the definition of
``skimage.feature.match_template``.  Written for NumPy and CuPy alike (``xp``).
"""

import numpy as np


def _box_sum(xp, x, axis, size, lo, count):
    """Sums of ``x`` along ``axis`` over windows ``[o + lo, o + lo + size)``, o < ``count``
    (indices outside the array contribute 0)."""
    length = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 1
    cs = xp.concatenate([xp.zeros(shape, dtype=x.dtype), xp.cumsum(x, axis=axis)], axis=axis)
    start = np.arange(count) + lo
    stop = np.clip(start + size, 0, length)
    start = np.clip(start, 0, length)
    hi = xp.take(cs, xp.asarray(stop), axis=axis)
    hi -= xp.take(cs, xp.asarray(start), axis=axis)
    return hi


def window_variance(xp, block, fshape, lo, oshape):
    """``var_n`` of every window: ``block`` is ``(B, C, *S)`` (channels summed into each
    window); returns float64 ``(B, *oshape)``."""
    x = block.astype(np.float64)
    s1 = x.sum(axis=1)
    s2 = (x * x).sum(axis=1)
    del x
    for d, (size, l, count) in enumerate(zip(fshape, lo, oshape)):
        s1 = _box_sum(xp, s1, d + 1, size, l, count)
        s2 = _box_sum(xp, s2, d + 1, size, l, count)
    n = float(block.shape[1] * np.prod(fshape))
    var = s2 - s1 * s1 / n
    xp.maximum(var, 0.0, out=var)
    return var


def centred_filters(xp, filters, dtype):
    """``(filters - mean, ssd)``: each filter minus its mean (over all its values), in
    ``dtype``, and the float64 sums of squared deviations ``(K,)``."""
    f = filters.astype(np.float64)
    axes = tuple(range(1, f.ndim))
    f -= f.mean(axis=axes, keepdims=True)
    ssd = (f * f).sum(axis=axes)
    return f.astype(dtype, copy=False), ssd
