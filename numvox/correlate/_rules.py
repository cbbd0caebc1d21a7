"""The rules of :func:`numvox.correlate_batch`, written once: option checks, the geometry of
a call (:class:`Geometry`), output shapes and dtypes (:func:`output_specs`, also the static
shape rule of the TensorFlow wrapper), the canonical kernel views, and the cost model that
picks the direct or the FFT method.

Every other module of the family imports this one; it imports none of them.
"""

import math
import numbers
from typing import NamedTuple, Optional

import numpy as np

from numvox._shared.halfprec import NATIVE, half_code
from numvox._shared.validate import check_choice

MODES = ("full", "same", "valid")
REDUCES = ("max", "argmax")
METHODS = ("auto", "direct", "fft")
MAX_ITEM_NDIM = 4
BIG_INDEX = np.iinfo(np.int64).max  # "no position" in partial maxima: loses every tie


class Geometry(NamedTuple):
    """The shapes of one call.

    ``N`` images and ``K`` filters; ``ca`` the channel axis of the inputs (normalised to
    ``1..ndim-1``) or None; ``spatial`` the correlated input axes; ``C`` the channel count (1
    without ``ca``); per correlated axis: ``S`` image and ``s`` filter lengths, ``lo`` the offset
    of output 0's window in the image, ``O`` the output length.
    """

    N: int
    K: int
    ca: Optional[int]
    spatial: tuple
    C: int
    S: tuple
    s: tuple
    lo: tuple
    O: tuple
    mode: str


def check_options(mode, reduce, method, normalize, progress, out):
    """The checked ``(mode, reduce, method)``; TypeError / ValueError on bad options."""
    mode = check_choice(mode, "mode", MODES)
    if reduce is not None:
        reduce = check_choice(reduce, "reduce", REDUCES)
    method = check_choice(method, "method", METHODS)
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False; got {normalize!r}")
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False; got {progress!r}")
    if reduce != "argmax" and isinstance(out, (tuple, list)):
        raise TypeError("out must be a single array unless reduce='argmax'")
    return mode, reduce, method


def split_out(out, reduce):
    """``(out_values, out_positions)`` of a reduced call's ``out`` argument (None where absent)."""
    if out is None:
        return None, None
    if reduce == "argmax":
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError("with reduce='argmax', out must be a (values, positions) pair")
        return tuple(out)
    return out, None


def is_single(dtype):
    """Whether ``dtype`` computes in float32 (float32, float16, bfloat16)."""
    dtype = np.dtype(dtype)
    return dtype == np.float32 or half_code(dtype) != NATIVE


def result_dtype(images_dtype, filters_dtype):
    """float32 when both inputs are single precision or narrower, else float64."""
    return np.float32 if is_single(images_dtype) and is_single(filters_dtype) else np.float64


def _check_ranks(ashape, bshape):
    if len(ashape) != len(bshape):
        raise ValueError(
            f"images has shape {tuple(ashape)} ({len(ashape)}-D) and filters has shape {tuple(bshape)} "
            f"({len(bshape)}-D); they need the same number of dimensions: (N, *item) and (K, *item)"
        )


def _channel_index(nd, channel_axis, ashape):
    """``channel_axis`` as an axis index in ``1..nd-1``, or None (checked)."""
    if channel_axis is None:
        return None
    if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis, numbers.Integral):
        raise TypeError(f"channel_axis must be None or an int; got {channel_axis!r}")
    ca = int(channel_axis)
    if not -nd <= ca < nd:
        raise ValueError(f"channel_axis={channel_axis} is out of range for images of shape {tuple(ashape)}")
    ca %= nd
    if ca == 0:
        raise ValueError("channel_axis cannot be axis 0, which is the batch axis (N images, K filters)")
    if nd == 2:
        raise ValueError(
            f"channel_axis={channel_axis} leaves no spatial axis in items of shape {tuple(ashape[1:])}; "
            "use channel_axis=None"
        )
    return ca


def _out_length(S, s, mode):
    """Output length along one correlated axis (None where a length is unknown)."""
    if S is None or s is None:
        return None
    if mode == "full":
        return S + s - 1
    if mode == "same":
        return S
    return S - s + 1


def _offset(s, mode):
    """Image position of output 0's window start along one axis."""
    if mode == "full":
        return -(s - 1)
    if mode == "same":
        return -(s // 2)
    return 0


def item_output_shape(ashape, bshape, mode, channel_axis):
    """Per-pair output shape ``O`` (a list; None where unknown) of inputs of shapes ``ashape``
    ``(N, *item)`` and ``bshape`` ``(K, *item)``: the correlated axes are the item axes other
    than ``channel_axis``."""
    _check_ranks(ashape, bshape)
    nd = len(ashape)
    ca = _channel_index(nd, channel_axis, ashape)
    return [_out_length(ashape[a], bshape[a], mode) for a in range(1, nd) if a != ca]


def geometry(ashape, bshape, mode, channel_axis):
    """The :class:`Geometry` of inputs of shapes ``ashape`` and ``bshape`` (ValueError /
    TypeError on shapes or a ``channel_axis`` that the operation does not accept)."""
    ashape, bshape = tuple(int(x) for x in ashape), tuple(int(x) for x in bshape)
    _check_ranks(ashape, bshape)
    nd = len(ashape)
    if not 2 <= nd <= MAX_ITEM_NDIM + 1:
        raise ValueError(
            f"images has shape {ashape}; expected (N, *item) with 1-D to {MAX_ITEM_NDIM}-D items "
            f"(2-D to {MAX_ITEM_NDIM + 1}-D arrays)"
        )
    ca = _channel_index(nd, channel_axis, ashape)
    C = 1 if ca is None else ashape[ca]
    if ca is not None and bshape[ca] != C:
        raise ValueError(
            f"images has {C} channels (axis {ca} of {ashape}) but filters has {bshape[ca]} "
            f"(axis {ca} of {bshape}); channel counts must match with channel_axis set"
        )
    spatial = tuple(a for a in range(1, nd) if a != ca)
    S = tuple(ashape[a] for a in spatial)
    s = tuple(bshape[a] for a in spatial)
    if min(S + s + (C,)) == 0:
        raise ValueError(
            f"images items {ashape[1:]} and filters items {bshape[1:]} must have no zero-length axis "
            "(empty batches, N == 0 or K == 0, are fine)"
        )
    if mode == "valid" and any(sd > Sd for Sd, sd in zip(S, s)):
        raise ValueError(
            f"mode='valid' needs filters no larger than images along every correlated axis; "
            f"images items are {S}, filters items {s}" + (" (channel axis excluded)" if ca is not None else "")
        )
    lo = tuple(_offset(sd, mode) for sd in s)
    O = tuple(item_output_shape(ashape, bshape, mode, ca))
    return Geometry(ashape[0], bshape[0], ca, spatial, C, S, s, lo, O, mode)


def output_specs(shapes, dtypes, options):
    """``[(shape, dtype), ...]`` of the results of ``correlate_batch``.

    ``shapes`` maps ``"images"`` and ``"filters"`` to lists of ints (None where unknown) or
    None (unknown rank); ``dtypes`` maps them to dtypes; ``options`` holds ``mode``,
    ``channel_axis`` and ``reduce``.  One entry: the maps ``(N, K, *O)`` or the maxima
    ``(N, K)``; two for ``reduce="argmax"``: the maxima and the int64 positions
    ``(N, K, len(O))``.  The in-memory and Dask paths take their result shapes from here.
    """
    im, fi = shapes.get("images"), shapes.get("filters")
    dtype = result_dtype(dtypes["images"], dtypes["filters"])
    reduce = options.get("reduce")
    n = None if im is None else im[0]
    k = None if fi is None else fi[0]
    if im is None or fi is None:
        O = None
    else:
        O = item_output_shape(list(im), list(fi), options.get("mode", "same"), options.get("channel_axis"))
    if reduce is None:
        return [(None if O is None else [n, k, *O], dtype)]
    if reduce == "max":
        return [([n, k], dtype)]
    return [([n, k], dtype), ([n, k, None if O is None else len(O)], np.int64)]


# -- canonical views ---------------------------------------------------------------------------


def pad4(seq, fill):
    """``seq`` as a list of 4, padded in front with ``fill``."""
    seq = list(seq)
    return [fill] * (MAX_ITEM_NDIM - len(seq)) + seq


def _restride(a, shape, strides):
    if isinstance(a, np.ndarray):
        return np.lib.stride_tricks.as_strided(a, shape, strides, writeable=False)
    from numba.cuda.cudadrv.devicearray import DeviceNDArray  # pragma: no cover - needs a GPU

    return DeviceNDArray(shape, strides, a.dtype, gpu_data=a.gpu_data)  # pragma: no cover


def canonical(a, geom):
    """The 6-D kernel view ``(B, C, D0, D1, D2, D3)`` of ``a`` (its own dtype; no copy)."""
    st = tuple(a.strides)
    pad = MAX_ITEM_NDIM - len(geom.spatial)
    shape = (a.shape[0], geom.C) + (1,) * pad + tuple(a.shape[x] for x in geom.spatial)
    strides = (st[0], 0 if geom.ca is None else st[geom.ca]) + (0,) * pad + tuple(st[x] for x in geom.spatial)
    return _restride(a, shape, strides)


def channels_first(xp, a, geom):
    """``(B, C, *spatial)`` view of an input in its own dtype (``xp``: NumPy or CuPy)."""
    if geom.ca is None:
        return a[:, None]
    return xp.moveaxis(a, geom.ca, 1)


# -- method choice -----------------------------------------------------------------------------


def fft_sizes(S, s, lo, O):
    """Transform length per axis: ``F >= max(S - lo, O + lo + s - 1, s)``, a fast size."""
    import scipy.fft

    sizes = []
    for d in range(len(S)):
        need = max(S[d] - lo[d], O[d] + lo[d] + s[d] - 1, s[d])
        sizes.append(scipy.fft.next_fast_len(need, real=True))
    return sizes


def fft_cost(geom):
    """Estimated flops of the FFT path."""
    N, K, C = geom.N, geom.K, geom.C
    P = math.prod(fft_sizes(geom.S, geom.s, geom.lo, geom.O))
    lg = math.log2(max(P, 2))
    # forward transforms, then per pair: C complex multiply-adds per frequency + inverse transform
    return 2.5 * P * lg * (N * C + K * C + N * K) / 2 + N * K * C * P * 2


def direct_cost(geom):
    """Multiply-adds of the direct path."""
    return geom.N * geom.K * geom.C * math.prod(geom.O) * math.prod(geom.s)


def have_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


def choose_method(geom, on_device):
    """``"direct"`` or ``"fft"``, by estimated cost (FFT work counted as ~3 direct MACs per flop);
    ``on_device``: the inputs live on a GPU (without CuPy only the direct kernel runs there)."""
    if on_device and not have_cupy():  # pragma: no cover - needs a GPU
        return "direct"
    return "fft" if 3.0 * fft_cost(geom) < direct_cost(geom) else "direct"
