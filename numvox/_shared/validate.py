"""Argument checks with messages that name the argument, what was given and what is expected."""

import math
import numbers

import numpy as np

from .halfprec import NATIVE, half_code


def describe_dtype(dtype):
    return str(np.dtype(dtype))


def check_real_dtype(a, name, *, allow_int=True, allow_bool=False):
    """Raise TypeError unless ``a`` has a real numeric dtype (float16/bfloat16 included)."""
    dtype = np.dtype(a.dtype)
    if half_code(dtype) != NATIVE:
        return
    kinds = "f" + ("iu" if allow_int else "") + ("b" if allow_bool else "")
    if dtype.kind not in kinds:
        expected = "a real floating" + (" or integer" if allow_int else "") + " dtype"
        raise TypeError(f"{name} has dtype {dtype}; expected {expected}")


def check_ndim(a, name, ndims, what=None):
    """Raise ValueError unless ``a.ndim`` is in ``ndims`` (an int or a collection)."""
    ndims = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if len(a.shape) not in ndims:
        expected = what or " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} has shape {tuple(a.shape)} ({len(a.shape)}-D); expected {expected}")


def check_choice(value, name, choices):
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


#: the largest integer argument numvox accepts (sizes, strides, paddings, seeds): kernels do
#: their index arithmetic in int64, and products of two such values must not overflow
MAX_INT = 2**31 - 1


def _short(value):
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


def check_number(value, name, *, minimum=None, maximum=None, integer=False, finite=True, clip=False):
    """A Python number checked for type, finiteness and range.

    Integers must lie within +-:data:`MAX_INT` (with ``clip=True``, for arguments where "larger
    than anything" has a meaning such as a window radius, larger ones become ``MAX_INT``); real
    numbers must convert to a float64 (``10**400`` raises ValueError, not OverflowError).
    """
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a real number'}; got {_short(value)}")
    if integer and clip and int(value) > MAX_INT:
        value = MAX_INT
    if integer and abs(int(value)) > MAX_INT:
        raise ValueError(f"{name} must be an integer within +-{MAX_INT}; got {_short(value)}")
    if not integer:
        try:
            as_float = float(value)
        except OverflowError:
            raise ValueError(f"{name} is too large for a float64; got {_short(value)}") from None
        if finite and not math.isfinite(as_float):
            raise ValueError(f"{name} must be finite; got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {_short(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {_short(value)}")
    return int(value) if integer else as_float


def as_int_tuple(value, n, name, *, minimum=None):
    """An int or a length-``n`` sequence of ints as a tuple of ``n`` ints (``stride=2`` style)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        values = (int(value),) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a sequence of {n} ints; got {value!r}") from None
        if len(values) != n:
            raise ValueError(f"{name} must have {n} entries (one per spatial axis); got {value!r}")
        for v in values:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{name} must contain ints; got {value!r}")
        values = tuple(int(v) for v in values)
    if minimum is not None and any(v < minimum for v in values):
        raise ValueError(f"{name} entries must be >= {minimum}; got {value!r}")
    if any(abs(v) > MAX_INT for v in values):
        raise ValueError(f"{name} entries must lie within +-{MAX_INT}; got {_short(value)}")
    return values


def check_same_shape(a, b, name_a, name_b, axes=slice(None)):
    """Raise ValueError unless ``a.shape[axes] == b.shape[axes]``."""
    sa, sb = tuple(a.shape)[axes], tuple(b.shape)[axes]
    if sa != sb:
        raise ValueError(
            f"{name_a} and {name_b} must agree in shape{'' if axes == slice(None) else ' ' + _axes_str(axes)}: "
            f"{name_a} has {tuple(a.shape)}, {name_b} has {tuple(b.shape)}"
        )


def _axes_str(axes):
    start = "" if axes.start is None else axes.start
    stop = "" if axes.stop is None else axes.stop
    return f"[{start}:{stop}]"
