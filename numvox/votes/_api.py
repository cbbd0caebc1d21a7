"""Public functions: :func:`aggregate_votes` and :func:`heatmap_peaks`."""

import numpy as np

from .._shared.arrays import Call, dask_implementation, is_dask
from .._shared.halfprec import FLOAT16, NATIVE, half_code, kernel_view
from .._shared.validate import check_choice, check_ndim, check_number, check_real_dtype

SPLATS = ("nearest", "linear")
_PROFILE_VOXELS = 1 << 20  # balance the threads' chunks (see work_split) from this size on
_VOTE_COST = 64.0  # one vote's work, in numbers scanned (measured: ~18-40 ns vs ~0.3 ns)
_DEFERRED_FRACTION = 2  # the deferred lists hold at most 1/_DEFERRED_FRACTION of the output bytes
LAYOUTS = ("axis-major", "landmark-major")


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
        float16, bfloat16, float32, float64 (or integer); any memory order, strided views
        and read-only arrays are used in place, without copies.
    offsets : array_like, shape (X, Y, Z, 3L) or (B, X, Y, Z, 3L)
        Offset vectors in voxels, same dtypes accepted as ``probs``.
    threshold : float, optional
        A voxel votes for ``l`` iff ``probs[..., l+1] >= threshold`` (NaN never votes).  Must
        be finite; 0 makes every voxel with a non-negative probability vote.
    splat : {"nearest", "linear"}, optional
        ``"nearest"``: the whole weight lands on the voxel ``floor(p + 0.5)`` (per axis).
        ``"linear"``: it is split over the 8 voxels around ``p`` with trilinear weights.
    offset_layout : {"axis-major", "landmark-major"}, optional
        ``"axis-major"``: ``offsets[..., a*L + l]`` is the offset along axis ``a`` for
        landmark ``l`` (the layout of the original question); ``"landmark-major"``:
        ``offsets[..., 3*l + a]``.
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
        Non-numeric dtypes, a non-number threshold, an unusable ``out``.
    ValueError
        Mismatched shapes, wrong channel counts (``offsets`` needs ``3 * (probs.shape[-1]
        - 1)`` channels), a non-finite threshold, unknown ``splat`` / ``offset_layout``.

    Notes
    -----
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
        return dask_implementation("aggregate_votes")(
            probs, offsets, threshold=threshold, splat=splat, offset_layout=offset_layout, out=out, backend=backend
        )
    call = Call(backend, probs=probs, offsets=offsets)
    P, O = call["probs"], call["offsets"]
    L = check_vote_inputs(P, O)
    thr = check_number(threshold, "threshold")
    check_choice(splat, "splat", SPLATS)
    check_choice(offset_layout, "offset_layout", LAYOUTS)

    batched = len(P.shape) == 5
    spatial = tuple(int(s) for s in P.shape[-4:-1])
    shape = ((int(P.shape[0]),) if batched else ()) + (L,) + spatial
    # A new CPU output comes from calloc: heatmaps that receive votes near the landmarks
    # only never touch most of their pages.
    res = call.output(out, shape, np.float32, zero=True)
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
        _aggregate_host(Pk, pcode, Ok, ocode, thr, L, landmark_major, linear, res5)
    else:
        from ._cuda import aggregate_cuda

        aggregate_cuda(Pk, pcode, Ok, ocode, thr, L, landmark_major, linear, res5)
    return call.wrap(res)


def check_vote_inputs(P, O):
    """Check ``probs`` / ``offsets`` shapes and dtypes (also used by :mod:`numvox.dask`);
    return the number of landmarks ``L``."""
    check_real_dtype(P, "probs")
    check_real_dtype(O, "offsets")
    check_ndim(P, "probs", (4, 5), "(X, Y, Z, L+1) or (B, X, Y, Z, L+1)")
    if len(O.shape) != len(P.shape):
        raise ValueError(
            f"offsets has shape {tuple(O.shape)} but probs has shape {tuple(P.shape)}; "
            "both must be (X, Y, Z, C) or both (B, X, Y, Z, C)"
        )
    if tuple(O.shape[:-1]) != tuple(P.shape[:-1]):
        raise ValueError(
            f"probs and offsets must agree in all but the channel axis: probs has "
            f"{tuple(P.shape)}, offsets has {tuple(O.shape)}"
        )
    C = int(P.shape[-1])
    if C < 2:
        raise ValueError(
            f"probs has {C} channel(s) (shape {tuple(P.shape)}); expected L+1 >= 2 "
            "(background + at least one landmark)"
        )
    L = C - 1
    if int(O.shape[-1]) != 3 * L:
        raise ValueError(
            f"offsets has {O.shape[-1]} channels (shape {tuple(O.shape)}); expected 3*L = {3 * L} "
            f"for the L = {L} landmarks of probs"
        )
    return L


def work_split(B, X, Y, threads, votes=None, step=1, Z=1, C=1):
    """``bounds``: the source rows ``b * X + x`` of the CPU kernel's chunks (one per thread,
    see :mod:`numvox.votes._cpu`), as an int64 array ``(nchunks + 1,)``.

    Fewer chunks than threads for tiny volumes (fewer than 64 lines per chunk), so that a
    deferred list of half the output's size always holds one line's votes.  Without
    ``votes`` the rows are split evenly; with ``votes`` (``(B * X,)`` vote counts sampled
    on every ``step``-th line, from :func:`numvox.votes._cpu.vote_profile`) the chunks get
    equal estimated work: ``Z * C`` numbers scanned per line plus ``_VOTE_COST`` per vote.
    Votes cluster where a network sees its landmarks, so an even split can leave one
    thread with most of them.
    """
    R = B * X
    nchunks = max(1, min(int(threads), R, (R * Y) // 64))
    if votes is None or nchunks == 1:
        return np.array([c * R // nchunks for c in range(nchunks + 1)], np.int64)
    cost = np.cumsum(float(Y * Z * C) + _VOTE_COST * float(step) * votes.astype(np.float64))
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, nchunks) / nchunks, side="right")
    bounds = np.concatenate(([0], cuts, [R])).astype(np.int64)
    c = np.arange(nchunks + 1)
    return np.clip(bounds, c, R - nchunks + c)  # every chunk keeps at least one row


def scan_threshold(thr, dtype, code=NATIVE):
    """The threshold in the scan's dtype: for float32 data the smallest float32 ``t >= thr``,
    so that ``v >= t`` in float32 decides exactly as ``float64(v) >= thr``.

    For half-precision bits (``code`` FLOAT16 / BFLOAT16, ``thr > 0`` only) a pair of
    ``uint16`` ``(lo, hi)``: ``lo`` the bits of the smallest half value ``>= thr`` and
    ``hi`` those of +inf, so that ``lo <= bits <= hi`` decides exactly as ``value >= thr``
    (the positive values order as their bits; negative values have bit 15 set and NaNs
    lie above +inf).  A ``thr`` above the largest finite value gives ``lo = hi``: +inf only.
    """
    if code != NATIVE:
        if not thr > 0:
            raise ValueError("the half-precision bit scan needs a positive threshold")
        if code == FLOAT16:
            with np.errstate(over="ignore"):
                t = np.float16(thr)  # round to nearest (inf above the finite range)
                if float(t) < thr:
                    t = np.nextafter(t, np.float16(np.inf))
            return (np.uint16(t.view(np.uint16)), np.uint16(0x7C00))
        t32 = scan_threshold(thr, np.float32)  # smallest float32 >= thr (inf above the range)
        b32 = int(np.float32(t32).view(np.uint32))
        lo = (b32 >> 16) + (1 if b32 & 0xFFFF else 0)  # bfloat16: the upper 16 bits, rounded up
        return (np.uint16(min(lo, 0x7F80)), np.uint16(0x7F80))
    if np.dtype(dtype) != np.float32:
        return np.float64(thr)
    with np.errstate(over="ignore"):
        t = np.float32(thr)
    if float(t) < thr:
        t = np.nextafter(t, np.float32(np.inf))
    return np.float32(t)


def _contiguous_float(a, code=NATIVE):
    """C-contiguous float32 / float64 data, or float16 / bfloat16 bits (``code``)."""
    return a.flags.c_contiguous and (a.dtype in (np.float32, np.float64) or (code != NATIVE and a.dtype == np.uint16))


def _aggregate_host(P, pcode, O, ocode, thr, L, landmark_major, linear, out5):
    import numba

    from ._cpu import aggregate_cpu, apply_deferred, launch, vote_profile

    B, X, Y, Z = (int(s) for s in P.shape[:4])
    # Half-precision probabilities are scanned as bits, which needs thr > 0 (at thr <= 0
    # -0.0 and the negative values' ordering would need sign handling): strided path else.
    if _contiguous_float(P, pcode) and _contiguous_float(O, ocode) and (pcode == NATIVE or thr > 0):
        # (B*X*Y, Z*C) views: every source line is one contiguous run (no copy); float16 /
        # bfloat16 stay uint16 bits, decoded only where a vote is read
        P = P.reshape(B * X * Y, Z * (L + 1))
        O = O.reshape(B * X * Y, Z * 3 * L)
        thr_scan = scan_threshold(thr, P.dtype, pcode)
        contiguous = (0, 2)
    else:
        thr_scan = np.float64(thr)
        contiguous = ()
    dims = np.array([B, X, Y, Z], np.int64)
    threads = numba.get_num_threads()
    votes, step = None, 16
    if threads > 1 and B * X * Y * Z >= _PROFILE_VOXELS:
        votes = np.empty(B * X, np.int64)
        launch(vote_profile, P, np.int64(pcode), thr_scan, dims, np.int64(L), np.int64(step), votes,
               inputs=(0,), contiguous=contiguous[:1])
    bounds = work_split(B, X, Y, threads, votes, step, Z, L + 1)
    nchunks = len(bounds) - 1
    # Deferred lists (int64 index + float32 weight): at most half the output's bytes in
    # all, but at least two lines' votes (2 * Z * L * 8; the kernel stops a round when less
    # than one line's room is left), mapped by the OS only where written (np.empty).
    cap = 0 if nchunks == 1 else max(out5.size // (3 * _DEFERRED_FRACTION * nchunks), 2 * Z * L * 8)
    didx = np.empty((nchunks, cap), np.int64)
    dval = np.empty((nchunks, cap), np.float32)
    dcount = np.zeros(nchunks, np.int64)
    resume = bounds[:-1] * Y
    out = out5.reshape(-1)
    while True:
        launch(
            aggregate_cpu, P, np.int64(pcode), O, np.int64(ocode), thr_scan, dims, np.int64(L),
            bool(landmark_major), bool(linear), out, bounds, resume, didx, dval, dcount,
            inputs=(0, 2), contiguous=contiguous,
        )
        if dcount.any():
            launch(apply_deferred, out, dims, np.int64(L), bounds, didx, dval, dcount)
            dcount[:] = 0
        if np.array_equal(resume, bounds[1:] * Y):
            return


def heatmap_peaks(heatmaps, *, radius=1, backend=None):
    """Landmark coordinates from heatmaps: arg-max refined by a local weighted centroid.

    Parameters
    ----------
    heatmaps : array_like, shape (L, X, Y, Z) or (B, L, X, Y, Z)
        E.g. the result of :func:`aggregate_votes`; any real dtype (float16/bfloat16 too),
        memory order or strides.
    radius : int, optional
        Half-width of the ``(2*radius+1)**3`` window (clipped at the borders) whose weighted
        centroid refines the arg-max voxel; 0 returns the arg-max voxel itself.
    backend : {None, "cpu", "cuda"}, optional
        Where to run; None follows the data.

    Returns
    -------
    coords : array, float64, shape (L, 3) or (B, L, 3)
        Sub-voxel landmark positions in voxel index units; NaN for a heatmap whose
        maximum is not positive (an all-zero heatmap in particular).
    values : array, float64, shape (L,) or (B, L)
        The peak heights (the heatmaps' maxima; 0 for an empty heatmap or one holding only
        NaN).

    Raises
    ------
    TypeError
        Non-numeric dtype, non-integer radius.
    ValueError
        Wrong number of dimensions, negative radius.

    Notes
    -----
    The arg-max is the first maximum in C order (as ``numpy.argmax``); NaN values are
    skipped.  The centroid weights are the window's values clipped at 0 (NaN skipped), so
    the refined position stays inside the window.  CUDA: a block-level arg-max reduction
    (shared memory) per heatmap slab, then one block per heatmap reduces the partial
    results and computes the centroid.

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
    radius = check_number(radius, "radius", integer=True, minimum=0, finite=False)  # ints are finite; np.isfinite fails on huge ones
    lead = tuple(int(s) for s in H.shape[:-3])
    N = int(np.prod(lead))
    X, Y, Z = (int(s) for s in H.shape[-3:])
    radius = min(radius, max(X, Y, Z))  # a wider window is the whole volume anyway
    coords = call.empty((N, 3), np.float64)
    values = call.empty((N,), np.float64)
    if N == 0:
        return call.wrap((coords.reshape(lead + (3,)), values.reshape(lead)))
    H5 = H if len(lead) == 2 else _with_batch(H, call.device_arrays)
    Hk, code = kernel_view(H5)
    if call.backend == "cpu":
        from ._cpu import launch, peaks_from_rows, row_maxima

        vals = np.full((N, X), -np.inf)
        idx = np.full((N, X), -1, np.int64)
        if X and not _argmax_numpy(H5, vals, idx):
            launch(row_maxima, Hk, np.int64(code), vals, idx, inputs=(0,))
        launch(peaks_from_rows, Hk, np.int64(code), vals, idx, np.int64(radius), coords, values, inputs=(0,))
    else:
        from ._cuda import peaks_cuda

        peaks_cuda(Hk, code, radius, coords, values)
    return call.wrap((coords.reshape(lead + (3,)), values.reshape(lead)))


def _argmax_numpy(H5, vals, idx):
    """Fill the row maxima from NumPy's SIMD ``argmax`` (first maximum, as the kernel) when
    every heatmap is a C-contiguous native-dtype block without NaN at its maximum; return
    False (nothing decided) otherwise, and the Numba row kernel does the work."""
    if H5.dtype.kind not in "fiu" or half_code(H5.dtype) != NATIVE:
        return False
    B, L, X, Y, Z = H5.shape
    found = []
    for b in range(B):
        for l in range(L):
            h = H5[b, l]
            if not h.flags.c_contiguous:
                return False
            i = int(np.argmax(h))
            v = h.reshape(-1)[i]
            if v != v:  # NaN: the kernel skips NaN, NumPy stops at it
                return False
            found.append((b * L + l, i, float(v)))
    for n, i, v in found:
        if v > -np.inf:
            x, r = divmod(i, Y * Z)
            vals[n, x] = v
            idx[n, x] = r
    return True
