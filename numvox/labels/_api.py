"""The public functions :func:`descent_labels` and :func:`descent_basins` and their ``OPS``.

In-memory inputs run through :mod:`._inmemory` (CPU or CUDA kernels), Dask arrays through
:mod:`._dask`; the rules both follow (checks, compute dtype, output shapes) are in
:mod:`._rules`.
"""

from numvox._shared.arrays import is_dask
from numvox._shared.ops import OpSpec
from numvox._shared.validate import check_choice

from ._inmemory import basins_in_memory, labels_in_memory
from ._rules import BORDERS, basins_output_specs, labels_output_specs


def descent_labels(volume, *, border="inside", out=None, backend=None):
    """Label every voxel with its direction of steepest descent among its 26 neighbours.

    Parameters
    ----------
    volume : array_like, 3-D
        Any real dtype (bool excluded): uint8/int8/uint16/int16/uint32/int32/uint64/int64,
        float16, bfloat16, float32, float64; any memory order (strided, read-only and
        memory-mapped arrays are read in place).  Either byte order: big-endian input (as
        nibabel returns for many NIfTI/Analyze files, or FITS data) is converted once to
        native order by the shared input policy (:mod:`numvox._shared.arrays`), one copy of
        the volume; native-order input is not copied.  NumPy, TensorFlow, CuPy or
        ``__cuda_array_interface__``.
    border : {"inside", "zero"}
        ``"inside"`` (default): at the volume's faces only in-volume neighbours are
        candidates.  ``"zero"``: the outermost layer is labelled 0 and not computed (the
        behaviour of ``create_label2`` in ``benchmarks/baselines_labels.py``).
    out : array, optional
        uint8 output of the volume's shape (C-contiguous, on the call's backend).
    backend : {None, "cpu", "cuda"}
        Where to run (default: where the data lives).

    Returns
    -------
    labels : uint8 array of ``volume.shape``, in the caller's library
        Neighbour code ``k = (da+1)*9 + (db+1)*3 + (dc+1)`` of the steepest descent, where
        neighbour ``k``'s score is ``(v[centre] - v[neighbour]) / sqrt(da^2 + db^2 + dc^2)``:
        the smallest ``k`` with the maximum score (ties of 0, i.e. equal neighbours, count),
        or 13 when every candidate is strictly greater than the centre (a strict local
        minimum, including a 1x1x1 volume).

    Raises
    ------
    TypeError
        ``volume`` is None, not an array (nor readable as one), or has a dtype no kernel
        reads (bool, object, str/bytes, structured, complex, datetime/timedelta, quantised
        or string TensorFlow tensors), refused before any foreign library touches its
        buffer; the message names the argument.  Also for an ``out`` of the wrong kind
        (not an array, a TensorFlow tensor, a host array for a CUDA call, ...) and a
        ``backend`` that is not a string.
    ValueError
        A 2-D or other non-3-D input (pass ``image[None]`` for the 3x3 analogue of a 2-D
        image: codes 9..17); a volume with NaN or infinite values (with their count); a bad
        ``border`` or ``backend``; an ``out`` of the wrong shape/dtype/layout or one that
        shares memory with ``volume``.
    MemoryError
        When the uint8 result cannot fit in this machine's memory (stated with its size),
        before allocating.
    numvox.CudaUnavailableError
        ``backend="cuda"`` (or ``NUMVOX_BACKEND=cuda``) where no CUDA GPU is usable.

    Notes
    -----
    Exactness (the module notes of ``numvox.labels._rules`` give the proofs): integer
    volumes get exact ties and orders whenever every voxel differs from its neighbours by
    less than 2**24 -- always for 8- and 16-bit integers, and for 32- and 64-bit integers
    however far from zero the values lie (int64 near 2**62, uint64 near 2**64): differences
    are taken in integer arithmetic and only then converted to float.  Larger differences
    are rounded once to float64 (right except where two scores of different distance
    classes agree to ~15 digits).  Float inputs (float16/bfloat16/float32 scored in float32,
    float64 in float64) agree with an exact reference except where the top two scores are
    within rounding; finite values near the dtype's maximum, whose differences overflow,
    are rescored with both sides halved, so overflow never makes a false tie.  The CPU
    kernel is tiled (O(tile) extra memory per thread); the CUDA kernel loads 10x10x10
    shared-memory tiles for 8x8x8 outputs.  If ``out`` is given and the volume has NaN
    values, ``out`` holds garbage when the ValueError is raised.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> v = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    >>> int(numvox.descent_labels(v)[1, 1, 1])  # drop 9 at distance 1 to v[0, 1, 1] beats 13/sqrt(3)
    4
    >>> int(numvox.descent_labels(v)[0, 0, 0])  # the minimum
    13
    """
    check_choice(border, "border", BORDERS)
    if is_dask(volume):
        from ._dask import descent_labels_dask

        return descent_labels_dask(volume, border=border, out=out, backend=backend)
    return labels_in_memory(volume, border, out, backend)


def descent_basins(volume, *, backend=None):
    """Basins of steepest descent: the watershed that :func:`descent_labels` defines.

    Every voxel points at its descent target (the neighbour its ``border="inside"`` label
    names; a local minimum points at itself).  Basins are the weakly connected components
    of this voxel -> target graph, so a flat minimum, whose equal voxels point at each
    other, is one basin.

    Parameters
    ----------
    volume : array_like, 3-D
        As for :func:`descent_labels`: finite values, any real dtype (bool excluded), either
        byte order (big-endian converted once to native order: one copy), NumPy,
        TensorFlow, CuPy or ``__cuda_array_interface__``.
    backend : {None, "cpu", "cuda"}
        Where to run (default: where the data lives).

    Returns
    -------
    basins : int32 array of ``volume.shape``, in the caller's library
        Basin ids ``1..M``, numbered in the C order of each basin's first voxel.

    Raises
    ------
    TypeError
        ``volume`` is None, not an array, or has a dtype no kernel reads (as
        :func:`descent_labels`), or a ``backend`` that is not a string; the message names
        the argument.
    ValueError
        A non-3-D input, NaN or infinite values (with their count), a bad ``backend``, or a
        volume of 2**31 voxels or more (int32 union-find indices: process it in chunks
        with the Dask driver).
    MemoryError
        When the int32 result cannot fit in this machine's memory, before allocating.
    numvox.CudaUnavailableError
        ``backend="cuda"`` (or ``NUMVOX_BACKEND=cuda``) where no CUDA GPU is usable.

    The labels follow :func:`descent_labels` (``border="inside"``), with its exactness.

    Notes
    -----
    CPU: union-find with the smaller index as root, run on slabs of planes in parallel,
    then the few cross-slab edges serially, then parallel path compression and numbering;
    extra memory is the uint8 labels (the int32 result doubles as the parent array).
    CUDA: parallel hooking (``atomic.min``) and pointer jumping on the device, rounds until
    nothing changes, then a block-scan numbering.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> v = np.array([[[0, 1, 2, 1, 0]]], dtype=np.int16)
    >>> numvox.descent_basins(v).tolist()
    [[[1, 1, 1, 2, 2]]]
    """
    if is_dask(volume):
        from ._dask import descent_basins_dask

        return descent_basins_dask(volume, backend=backend)
    return basins_in_memory(volume, backend)


OPS = (
    OpSpec("descent_labels", descent_labels, ("volume",), labels_output_specs),
    OpSpec("descent_basins", descent_basins, ("volume",), basins_output_specs),
)
