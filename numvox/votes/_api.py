"""Public functions: :func:`aggregate_votes` and :func:`heatmap_peaks`: input checks and
output shapes from :mod:`numvox.votes._rules`, then the kernels of the chosen backend
(:mod:`numvox.votes._cpu`, :mod:`numvox.votes._cuda`) or, for Dask inputs, the Dask driver
(:mod:`numvox.votes._dask`)."""

import numpy as np

from .._shared.arrays import Call, check_output_size, is_dask
from .._shared.halfprec import kernel_view
from .._shared.validate import check_choice, check_ndim, check_number, check_real_dtype
from ._rules import LAYOUTS, SPLATS, check_vote_inputs, known_shape, peaks_output_specs, votes_output_specs


def _with_batch(a, device):
    """A 5-D view ``(1, ...)`` of a 4-D kernel array (host or Numba device array)."""
    if not device:
        return a[None]
    try:  # pragma: no cover - needs a GPU
        return a.reshape((1,) + tuple(a.shape))
    except Exception:  # pragma: no cover - non-contiguous device view
        from numba.cuda.cudadrv.devicearray import DeviceNDArray

        return DeviceNDArray((1,) + tuple(a.shape), (0,) + tuple(a.strides), a.dtype, gpu_data=a.gpu_data)


def aggregate_votes(
    probs, offsets, *, threshold=0.5, splat="nearest", offset_layout="axis-major", out=None, backend=None
):
    """Aggregate per-voxel landmark votes into one heatmap per landmark.

    Every voxel ``v = (x, y, z)`` of a landmark network's output casts, for each landmark
    ``l``, a vote of weight ``probs[v, l+1]`` at the position ``v + offset_l(v)``, provided
    ``probs[v, l+1] >= threshold``.  The heatmap of landmark ``l`` is the sum of its votes.

    Parameters
    ----------
    probs : array_like, shape (X, Y, Z, L+1) or (B, X, Y, Z, L+1)
        Class probabilities, channel 0 the background (ignored), channels 1..L the landmarks.
        float16, bfloat16, float32, float64 or integer (see *Input dtypes* below).
    offsets : array_like, shape (X, Y, Z, 3L) or (B, X, Y, Z, 3L)
        Offset vectors in voxels, same dtypes accepted as ``probs``.
    threshold : float, optional
        A voxel votes for ``l`` iff ``probs[..., l+1] >= threshold`` (NaN never votes).  Must
        be finite; 0 makes every voxel with a non-negative probability vote.
    splat : {"nearest", "linear"}, optional
        ``"nearest"``: the whole weight lands on the voxel ``floor(p + 0.5)`` (per axis).
        ``"linear"``: it is split over the 8 voxels around ``p`` with trilinear weights.
    offset_layout : {"axis-major", "landmark-major"}, optional
        How the ``3L`` channels are ordered.  ``"axis-major"``: three blocks of ``L``
        channels, the x offsets of landmarks ``0..L-1``, then their y offsets, then their
        z offsets (``offsets[..., a*L + l]`` is the offset along axis ``a`` of landmark
        ``l``).  ``"landmark-major"``: one ``(x, y, z)`` triple per landmark, landmark after
        landmark (``offsets[..., 3*l + a]``).
    out : ndarray, optional
        float32 C-contiguous buffer of the result's shape to reuse (it is overwritten).
    backend : {None, "cpu", "cuda"}, optional
        Where to run; None follows the data (see :mod:`numvox`).

    Returns
    -------
    heatmaps : array, float32, shape (L, X, Y, Z) or (B, L, X, Y, Z)
        In the caller's array library (NumPy, TensorFlow, CuPy, ...).

    Raises
    ------
    TypeError
        Naming the argument: ``probs`` or ``offsets`` None, not an array, or of a dtype no
        kernel reads (bool, object, str, bytes, structured, complex, datetime64 /
        timedelta64, a TensorFlow string or quantised tensor: refused before TensorFlow or
        DLPack touches the buffer) or a sequence that cannot be read as an array; a
        threshold that is no real number; an ``out`` that is no array, a TensorFlow tensor, or on the wrong
        device; a ``backend`` that is no string.
    ValueError
        Wrong numbers of dimensions or mismatched shapes, wrong channel counts (``offsets``
        needs ``3 * (probs.shape[-1] - 1)`` channels); a threshold that is not finite or
        does not fit in a float64 (``threshold=10**400``); unknown ``splat``,
        ``offset_layout`` or ``backend``; an ``out`` of the wrong shape or dtype, not
        writeable or not C-contiguous, or sharing memory with ``probs`` or ``offsets``
        (checked with ``np.shares_memory`` before anything is written: the function never
        computes in place).
    MemoryError
        A new result larger than this machine's memory (the message states its size),
        raised before allocating.
    numvox.CudaUnavailableError
        ``backend="cuda"`` where no CUDA GPU can be used.

    Notes
    -----
    Input dtypes: float16, bfloat16, float32 and float64 are read as they are (half
    precision decoded from its bits inside the kernels, no converted copy); integer inputs
    are read as float64.  Any memory order, strided views and read-only arrays are used in
    place, without copies.  Big-endian (non-native byte order) host arrays, e.g. NIfTI /
    Analyze volumes from nibabel or FITS data, are converted once to native order by the
    shared input policy (:mod:`numvox._shared.arrays`): one O(n) copy of that input
    before the kernels run, the result identical to the native array's.

    Votes whose target voxel (or trilinear corner) lies outside the volume are dropped, as
    are votes with a NaN or infinite coordinate; offsets of any magnitude are range-checked
    in floating point before any conversion to integers.  Positions are computed in float64
    and accumulated into float32.

    CPU: one pass over ``probs``; a vote's offsets are read only when it passes the
    threshold.  Write conflicts are avoided by splitting the source rows among threads and
    giving only the batch item shared by two threads a private buffer, folded in afterwards
    over the rows it touched (peak extra memory at most 1x the output).  CUDA: one thread
    per source voxel (grid-stride loop) with ``cuda.atomic.add`` into the heatmaps, so the
    float32 sums may differ in the last bits between runs.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> probs = np.zeros((4, 4, 4, 2), np.float32); probs[..., 1] = 1.0
    >>> offsets = np.zeros((4, 4, 4, 3), np.float32)
    >>> offsets[..., 0] = 2 - np.arange(4)[:, None, None]   # every voxel points at x = 2
    >>> h = numvox.aggregate_votes(probs, offsets)
    >>> h.shape, float(h[0, 2].sum()), float(h.sum())
    ((1, 4, 4, 4), 64.0, 64.0)
    """
    if is_dask(probs) or is_dask(offsets):
        from ._dask import aggregate_votes_dask

        return aggregate_votes_dask(
            probs, offsets, threshold=threshold, splat=splat, offset_layout=offset_layout, out=out, backend=backend
        )
    call = Call(backend, probs=probs, offsets=offsets)
    P, O = call["probs"], call["offsets"]
    L = check_vote_inputs(P, O)
    thr = check_number(threshold, "threshold")
    check_choice(splat, "splat", SPLATS)
    check_choice(offset_layout, "offset_layout", LAYOUTS)

    batched = len(P.shape) == 5
    [(shape, dtype)] = votes_output_specs({"probs": known_shape(P), "offsets": known_shape(O)},
                                          {"probs": P.dtype, "offsets": O.dtype}, {})
    shape = tuple(shape)
    # A new CPU output comes from calloc: heatmaps that receive votes near the landmarks
    # only never touch most of their pages.
    res = call.output(out, shape, dtype, zero=True)
    if res.size == 0:
        return call.wrap(res)
    if not batched:
        P = _with_batch(P, call.device_arrays)
        O = _with_batch(O, call.device_arrays)
    res5 = res if batched else res.reshape((1,) + shape)
    Pk, pcode = kernel_view(P)
    Ok, ocode = kernel_view(O)
    landmark_major = offset_layout == "landmark-major"
    linear = splat == "linear"
    if call.backend == "cpu":
        from ._cpu import aggregate_host

        aggregate_host(Pk, pcode, Ok, ocode, thr, L, landmark_major, linear, res5)
    else:
        from ._cuda import aggregate_cuda

        aggregate_cuda(Pk, pcode, Ok, ocode, thr, L, landmark_major, linear, res5)
    return call.wrap(res)


def heatmap_peaks(heatmaps, *, radius=1, backend=None):
    """Landmark coordinates from heatmaps: arg-max refined by a local weighted centroid.

    Parameters
    ----------
    heatmaps : array_like, shape (L, X, Y, Z) or (B, L, X, Y, Z)
        E.g. the result of :func:`aggregate_votes`: float16, bfloat16, float32, float64 or
        integer, any memory order or strides (see *Input dtypes* below).
    radius : int, optional
        Half-width of the ``(2*radius+1)**3`` window (clipped at the borders) whose weighted
        centroid refines the arg-max voxel; 0 returns the arg-max voxel itself.
    backend : {None, "cpu", "cuda"}, optional
        Where to run; None follows the data.

    Returns
    -------
    coords : array, float64, shape (L, 3) or (B, L, 3)
        Sub-voxel landmark positions in voxel index units, finite whenever the maximum is
        positive (+inf and values near the dtype's maximum included); NaN exactly when
        there is no positive maximum: a maximum <= 0 (an all-zero heatmap in particular),
        a heatmap holding only NaN / -inf, or one without voxels (an empty X, Y or Z axis).
    values : array, float64, shape (L,) or (B, L)
        The peak heights (the heatmaps' maxima, +inf included); 0 for a heatmap holding
        only NaN / -inf, NaN for one without voxels.

    Raises
    ------
    TypeError
        Naming the argument: ``heatmaps`` None, not an array, or of a dtype no kernel
        reads (bool, object, str, bytes, structured, complex, datetime64 / timedelta64,
        a TensorFlow string or quantised tensor: refused before TensorFlow or DLPack
        touches the buffer) or a sequence that cannot be read as an array; a ``radius``
        that is no integer; a ``backend`` that is no string.
    ValueError
        ``heatmaps`` not 4-D or 5-D; a negative ``radius`` (a radius beyond ``2**31 - 1``,
        e.g. ``10**30``, means the whole volume); an unknown ``backend``.
    MemoryError
        Results larger than this machine's memory (a broadcast ``heatmaps`` view with a
        huge leading shape; the message states the size), raised before allocating.
    numvox.CudaUnavailableError
        ``backend="cuda"`` where no CUDA GPU can be used.

    Notes
    -----
    The arg-max is the first maximum in C order (as ``numpy.argmax``); NaN values are
    skipped.  The centroid weights are the window's values clipped at 0 (NaN skipped),
    summed in float64, so the refined position stays inside the window.  A maximum of
    +inf gives the arg-max voxel itself (the first +inf in C order).  A window whose
    float64 sums overflow (float64 values near 1.8e308) is summed again with its weights
    scaled by a power of two (exact), only then, so the usual path costs nothing extra.
    CPU and CUDA apply the same rule, written once (:mod:`numvox.votes._peak`).  CUDA: a
    block-level arg-max reduction (shared memory) per heatmap slab, then one block per
    heatmap reduces the partial results and computes the centroid.

    Input dtypes: float16 and bfloat16 are decoded from their bits inside the kernels (no
    converted copy); float32, float64 and integers are read as they are, in place, in any
    memory order.  Big-endian (non-native byte order) host arrays are converted once to
    native order by the shared input policy (:mod:`numvox._shared.arrays`): one O(n) copy
    of that input.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> h = np.zeros((1, 5, 5, 5), np.float32); h[0, 2, 2, 2] = 2; h[0, 3, 2, 2] = 2
    >>> coords, values = numvox.heatmap_peaks(h)
    >>> coords.tolist(), values.tolist()
    ([[2.5, 2.0, 2.0]], [2.0])
    """
    call = Call(backend, heatmaps=heatmaps)
    H = call["heatmaps"]
    check_real_dtype(H, "heatmaps")
    check_ndim(H, "heatmaps", (4, 5), "(L, X, Y, Z) or (B, L, X, Y, Z)")
    # larger than 2**31 - 1 means the whole volume anyway (clipped below)
    radius = check_number(radius, "radius", integer=True, minimum=0, clip=True)
    (cshape, cdtype), (vshape, vdtype) = peaks_output_specs({"heatmaps": known_shape(H)}, {"heatmaps": H.dtype}, {})
    check_output_size(tuple(cshape), cdtype, name="the coordinates")  # before any product of sizes
    lead = tuple(vshape)
    N = int(np.prod(lead))
    X, Y, Z = (int(s) for s in H.shape[-3:])
    radius = min(radius, max(X, Y, Z))  # a wider window is the whole volume anyway
    coords = call.empty((N, 3), cdtype)
    values = call.empty((N,), vdtype)
    if N == 0:
        return call.wrap((coords.reshape(tuple(cshape)), values.reshape(lead)))
    H5 = H if len(lead) == 2 else _with_batch(H, call.device_arrays)
    Hk, code = kernel_view(H5)
    if call.backend == "cpu":
        from ._cpu import peaks_host

        peaks_host(Hk, code, radius, coords, values, H5)
    else:
        from ._cuda import peaks_cuda

        peaks_cuda(Hk, code, radius, coords, values)
    return call.wrap((coords.reshape(tuple(cshape)), values.reshape(lead)))
