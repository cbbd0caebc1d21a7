"""The labels family's rules, written once: constants, input checks, error messages, the
compute dtype and the output shapes (shared by the in-memory path, the Dask driver and the
TensorFlow wrappers through ``OPS``).

Exactness (why integer inputs give exact answers)
-------------------------------------------------
Scores are ``(c - n) * w`` with ``w`` = 1, 1/sqrt(2) or 1/sqrt(3) by neighbour distance,
computed in the *compute dtype* (:func:`compute_dtype`).  The CPU kernels (and the CUDA
kernel for 64-bit integers) first take, per distance class, the neighbour with the smallest
*value* (the smallest code among equal values), then compare the three classes' scores; the
CUDA kernel for other dtypes scores all 26 neighbours in code order, the same choice
whenever differences are exact (as they are for those integers).

* Within a class the choice compares values, never scores: exact for every dtype.
* Differences of integers are taken exactly and converted to the compute dtype once:
  int8/uint8 values (|d| <= 255) are exact in float32, int16/uint16/int32/uint32 values and
  their differences (|d| < 2**33) in float64.  int64/uint64 values are not converted as
  they are (float64 holds 53 bits): the CPU kernel keys each tile's values relative to the
  tile's first voxel, ``float64(v - base)`` with ``v - base`` taken in 64-bit integer
  arithmetic, exact while a tile's values lie within 2**52 of it; a tile that spans more is
  redone voxel by voxel with ``c - m`` taken exactly and rounded once to float64.  The CUDA
  kernel compares the integers themselves and rounds each exact ``c - m`` once.  So the
  difference is exact whenever ``|c - m| < 2**53`` (2**24 in float32), wherever the values
  lie: int64 values near 2**62 or uint64 values near 2**64 with a small range are exact.
* Different classes: ``a / sqrt(m) == b / sqrt(n)`` for integers ``a, b`` and
  ``m != n`` in {1, 2, 3} only when ``a == b == 0`` (``n a^2 = m b^2`` has no other integer
  solutions), and otherwise the two scores differ by a relative amount of at least
  ``1 / (4 max(|a|, |b|)^2)``.  Rounding moves each score by at most ``2**-p`` relatively
  (p = 24 for float32, 53 for float64), so the order is exact while ``|d| < 2**((p - 4) / 2)``:
  1024 in float32, 2**24 in float64.

The promise: labels of integer volumes are exact whenever every voxel's differences to its
neighbours are below 2**24 (16.7 million) in magnitude -- always for uint8/int8/uint16/int16,
and for int32/uint32/int64/uint64 volumes whose values vary by less than 2**24 between
neighbours, however far from zero they lie.  Larger differences are still rounded only once,
so the labels are right except where two scores of different distance classes agree to ~15
significant digits.

Floats: float32/float16/bfloat16 inputs are computed in float32 (differences are rounded
once), float64 in float64; results agree with an exact reference except where the top two
scores are within rounding.  A difference of two finite floats overflows (to inf) only when
both are at least half an ulp of the dtype's maximum (2**103 for float32 and bfloat16, 2**970
for float64); such voxels are rescored with both sides of every difference halved (exact at
that size; on the CPU the tiles holding such values are redone voxel by voxel), so overflow
never creates a false tie between distance classes.
"""

import numpy as np

from numvox._shared.halfprec import BFLOAT16, FLOAT16, half_code, kernel_view
from numvox._shared.validate import check_ndim, check_real_dtype

BORDERS = ("inside", "zero")
MAX_BASIN_VOXELS = 2**31 - 1

W2 = 1.0 / np.sqrt(2.0)
W3 = 1.0 / np.sqrt(3.0)


def compute_dtype(dtype):
    """float32 for (b)float16/float32/uint8/int8 inputs, float64 for every other dtype."""
    dtype = np.dtype(dtype)
    if half_code(dtype) in (FLOAT16, BFLOAT16):
        return np.dtype(np.float32)
    if dtype in (np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.int8)):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def kernel_input(volume, V):
    """``(array, code, compute dtype)`` for the kernels.

    On a real GPU the shared conversion hands bfloat16 over as its uint16 bits; the original
    argument's dtype tells them apart from genuine uint16 data.
    """
    Vk, code = kernel_view(V)
    if code == 0 and np.dtype(Vk.dtype) == np.uint16 and "bfloat16" in str(getattr(volume, "dtype", "")):
        code = BFLOAT16
    cdtype = np.dtype(np.float32) if code else compute_dtype(Vk.dtype)
    return Vk, code, cdtype


def check_volume(V, name="volume"):
    """TypeError unless ``V`` has a real dtype; ValueError unless it is 3-D (with a hint for
    2-D images)."""
    check_real_dtype(V, name, allow_int=True)
    if len(V.shape) == 2:
        raise ValueError(
            f"{name} has shape {tuple(V.shape)} (2-D); expected a 3-D volume. For a 2-D image "
            f"pass {name}[None] (a one-plane volume): with border='inside' its labels are the "
            f"3x3 analogue, with codes 9..17 (13 = local minimum)"
        )
    check_ndim(V, name, 3)


def check_basin_voxels(n):
    """ValueError when ``n`` voxels are too many for int32 union-find indices."""
    if n > MAX_BASIN_VOXELS:
        raise ValueError(
            f"volume has {n} voxels; descent_basins numbers voxels with int32 and handles at "
            f"most {MAX_BASIN_VOXELS}: process it in chunks"
        )


def as_float(bits_or_values, code):
    """Host values of a kernel array (half-precision bits decoded) for error messages."""
    A = np.asarray(bits_or_values)
    if code == FLOAT16:
        return A.view(np.float16)
    if code == BFLOAT16:  # bfloat16 is the top half of a float32
        return (A.astype(np.uint32) << 16).view(np.float32)
    return A


def nonfinite_error(values, name, count):
    """The ValueError for ``count`` NaN/inf values (the NaN count is computed only here)."""
    n_nan = int(np.count_nonzero(np.isnan(values))) if values.dtype.kind == "f" else 0
    n_inf = int(count) - n_nan
    parts = []
    if n_nan:
        parts.append(f"{n_nan} NaN value{'s' if n_nan != 1 else ''}")
    if n_inf > 0:
        parts.append(f"{n_inf} infinite value{'s' if n_inf != 1 else ''}")
    what = " and ".join(parts) or f"{count} non-finite values"
    return ValueError(f"{name} contains {what}; descent labels need finite values")


# -- output shapes: ``numvox._shared.ops.OpSpec.output_specs`` ------------------------------
def labels_output_specs(shapes, dtypes, options):
    """``[(shape, uint8)]``: the labels have the volume's shape (``None`` where unknown)."""
    return [(shapes["volume"], np.uint8)]


def basins_output_specs(shapes, dtypes, options):
    """``[(shape, int32)]``: the basins have the volume's shape (``None`` where unknown)."""
    return [(shapes["volume"], np.int32)]


def output_of(specs, volume, options):
    """``(shape tuple, dtype)`` of the single result of ``specs`` for a concrete volume."""
    shape, dtype = specs({"volume": [int(s) for s in volume.shape]}, {"volume": np.dtype(volume.dtype)},
                         options)[0]
    return tuple(shape), np.dtype(dtype)
