"""Half-precision decoding in kernels, checked on every one of the 65536 bit patterns."""

import numpy as np
import pytest
from numba import cuda, njit  # module level: the simulator patches a kernel's global `cuda`

from numvox._shared.halfprec import BFLOAT16, FLOAT16, NATIVE, half_code, kernel_view, load_f64

ALL_BITS = np.arange(1 << 16, dtype=np.uint64).astype(np.uint16)


@njit(cache=True)
def _decode_all(bits, code, out):
    for i in range(bits.shape[0]):
        out[i] = load_f64(bits, i, code)


def _check_exact(decoded, reference):
    with np.errstate(invalid="ignore"):  # ml_dtypes warns when casting its NaNs
        reference = reference.astype(np.float64)
    assert np.array_equal(decoded, reference, equal_nan=True)
    # the sign of zero survives too
    assert np.array_equal(np.signbit(decoded), np.signbit(reference))


def test_float16_every_bit_pattern():
    out = np.empty(ALL_BITS.size)
    _decode_all(ALL_BITS, FLOAT16, out)
    _check_exact(out, ALL_BITS.view(np.float16))


def test_bfloat16_every_bit_pattern():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    out = np.empty(ALL_BITS.size)
    _decode_all(ALL_BITS, BFLOAT16, out)
    _check_exact(out, ALL_BITS.view(ml_dtypes.bfloat16))


def test_kernel_view_is_zero_copy_and_native_passes_through():
    x = np.ones((4, 3), np.float16)[:, ::2]
    view, code = kernel_view(x)
    assert code == FLOAT16 and view.dtype == np.uint16 and np.shares_memory(view, x)
    y = np.ones(3, np.int16)
    assert kernel_view(y) == (y, NATIVE)
    assert half_code(np.float32) == NATIVE


@pytest.mark.cuda
def test_cuda_loaders_match(cuda_backend):
    from numvox._shared.halfprec import cuda_loaders

    _, load = cuda_loaders()

    @cuda.jit
    def decode(bits, code, out):
        i = cuda.grid(1)
        if i < bits.shape[0]:
            out[i] = load(bits, i, code)

    rng = np.random.default_rng(0)
    special = np.array([0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x3C00], np.uint16)
    bits = np.concatenate([special, rng.integers(0, 1 << 16, 54).astype(np.uint16)])
    out = np.empty(bits.size)
    decode[2, 32](bits, FLOAT16, out)
    _check_exact(out, bits.view(np.float16))
