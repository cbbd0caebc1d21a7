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

NATIVE, FLOAT16, BFLOAT16 = 0, 1, 2

# 2**(e - 25) for the 5-bit binary16 exponent e; 2**(e - 134) for the 8-bit bfloat16 one.
_F16_SCALE = np.array([math.ldexp(1.0, e - 25) for e in range(32)], dtype=np.float64)
_BF16_SCALE = np.array([math.ldexp(1.0, e - 134) for e in range(256)], dtype=np.float64)


def _decode_f16(bits):
    h = np.int64(bits)
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0x1F:
        value = np.inf if mant == 0 else np.nan
    elif exp == 0:
        value = mant * _F16_SCALE[1]  # subnormal: mant * 2**-24
    else:
        value = (mant + 1024) * _F16_SCALE[exp]
    return -value if (h >> 15) & 1 else value


def _decode_bf16(bits):
    h = np.int64(bits)
    exp = (h >> 7) & 0xFF
    mant = h & 0x7F
    if exp == 0xFF:
        value = np.inf if mant == 0 else np.nan
    elif exp == 0:
        value = mant * _BF16_SCALE[1]
    else:
        value = (mant + 128) * _BF16_SCALE[exp]
    return -value if (h >> 15) & 1 else value


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
