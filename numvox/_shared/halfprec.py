"""Half-precision inputs without full-size float32 copies.

Numba's CPU target has no float16 (and nobody has bfloat16), but mixed-precision models emit
them.  numvox passes such arrays to kernels as their raw ``uint16`` bits (a zero-copy
``.view``) together with a small integer *code*, and the kernels decode each element as they
read it:

====  ===================  ======================================
code  constant             kernel input
====  ===================  ======================================
0     ``NATIVE``           any dtype Numba understands, used as is
1     ``FLOAT16``          IEEE binary16 bits in ``uint16``
2     ``BFLOAT16``         bfloat16 bits in ``uint16``
====  ===================  ======================================

Use :func:`kernel_view` on the host side, and ``load_f32`` / ``load_f64`` (CPU, ``@njit``)
or ``cuda_load_f32`` (built by :func:`cuda_loaders` for CUDA kernels) in the kernels.
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .compile import install_notice

NATIVE, FLOAT16, BFLOAT16 = 0, 1, 2

# Decoding without branches: each variable of a decoder is assigned once, so the kernels
# that inline it (``inline="always"``, several times per kernel) get no merged (phi)
# variables from it, which Numba's SSA pass flags as NumbaIRAssumptionWarning.  Per exponent
# field ``e`` (all ones: infinity or NaN):
#   value = (_LEAD[e] + mant) * _SCALE[e] + _NAN[e * (mant != 0)]
# _LEAD: the implicit leading bit (0 for subnormals, whose scale is that of e = 1);
# _SCALE: 2**(e - 25) for binary16, 2**(e - 134) for bfloat16, infinite at e = all ones;
# _NAN: NaN only at e = all ones (indexed there only when the mantissa is non-zero), 0 else;
# inf + NaN is a quiet NaN (no invalid-operation flag, so no NumPy warning in the CUDA
# simulator).  The sign bit is applied last with copysign, so -0.0 and negative NaNs keep it.


def _tables(exp_bits, mant_bits, bias):
    top = (1 << exp_bits) - 1
    lead = np.array([0.0] + [float(1 << mant_bits)] * top)
    scale = np.array([math.ldexp(1.0, max(e, 1) - bias - mant_bits) for e in range(top)] + [np.inf])
    nan = np.zeros(top + 1)
    nan[top] = np.nan
    return lead, scale, nan


_F16_LEAD, _F16_SCALE, _F16_NAN = _tables(5, 10, 15)
_BF16_LEAD, _BF16_SCALE, _BF16_NAN = _tables(8, 7, 127)


def _decode_f16(bits):
    h = np.int64(bits)
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    value = (_F16_LEAD[exp] + mant) * _F16_SCALE[exp] + _F16_NAN[exp * np.int64(mant != 0)]
    return math.copysign(value, 0.5 - ((h >> 15) & 1))


def _decode_bf16(bits):
    h = np.int64(bits)
    exp = (h >> 7) & 0xFF
    mant = h & 0x7F
    value = (_BF16_LEAD[exp] + mant) * _BF16_SCALE[exp] + _BF16_NAN[exp * np.int64(mant != 0)]
    return math.copysign(value, 0.5 - ((h >> 15) & 1))


decode_f16 = njit(inline="always", cache=True)(_decode_f16)
decode_bf16 = njit(inline="always", cache=True)(_decode_bf16)


def _load_bits(a, i, code):
    if code == FLOAT16:
        return decode_f16(a[i])
    if code == BFLOAT16:
        return decode_bf16(a[i])
    return np.float64(a[i])


def load_f64(a, i, code):
    """``float64(a[i])`` for a kernel array ``a`` with half-precision ``code``.

    ``i`` is an index (an int or a tuple of ints).  Only ``uint16`` arrays can hold
    half-precision bits, so for every other dtype the code is ignored at compile time and
    the load is a plain conversion (no branch in the kernels' inner loops).
    """
    return _load_bits(a, i, code)


@overload(load_f64, inline="always")
def _load_f64_impl(a, i, code):
    if isinstance(a, types.Array) and a.dtype != types.uint16:

        def plain(a, i, code):
            return np.float64(a[i])

        return plain
    return _load_bits


@njit(inline="always", cache=True)
def load_f32(a, i, code):
    """``float32(a[i])``; see :func:`load_f64`."""
    return np.float32(load_f64(a, i, code))


def cuda_loaders():
    """Device functions ``(load_f32, load_f64)`` with the same contract, for CUDA kernels."""
    from numba import cuda

    dev_f16 = cuda.jit(device=True, inline=True)(_decode_f16)
    dev_bf16 = cuda.jit(device=True, inline=True)(_decode_bf16)

    @cuda.jit(device=True, inline=True)
    def cuda_load_f64(a, i, code):
        if code == FLOAT16:
            return dev_f16(a[i])
        if code == BFLOAT16:
            return dev_bf16(a[i])
        return np.float64(a[i])

    @cuda.jit(device=True, inline=True)
    def cuda_load_f32(a, i, code):
        return np.float32(cuda_load_f64(a, i, code))

    return cuda_load_f32, cuda_load_f64


def half_code(dtype):
    """The code of a dtype: FLOAT16, BFLOAT16 or NATIVE."""
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return FLOAT16
    if dtype.name == "bfloat16":
        return BFLOAT16
    return NATIVE


def kernel_view(a):
    """``(array, code)``: half-precision arrays as a zero-copy ``uint16`` view, others as is.

    Works for NumPy and Numba device arrays (``.view`` on both).
    """
    code = half_code(a.dtype)
    if code == NATIVE:
        return a, NATIVE
    return a.view(np.uint16), code


# Every CPU kernel module imports this one: from here on, a numvox kernel about to compile
# says so on stderr where someone is watching (see numvox/_shared/compile.py for the rule).
install_notice()
