"""Public functions: :func:`descent_labels` and :func:`descent_basins`, plus the block-level
entry points that a chunked (Dask) driver builds on.

Exactness (why integer inputs give exact answers)
-------------------------------------------------
Scores are ``(c - n) * w`` with ``w`` = 1, 1/sqrt(2) or 1/sqrt(3) by neighbour distance,
computed in the *compute dtype* (:func:`compute_dtype`).

* Same distance class: ``w`` is shared, rounding is monotone, so for integer differences
  ``d_a == d_b`` gives bit-equal scores (exact ties -> smallest code) and ``d_a > d_b``
  gives ``s_a > s_b`` as long as the differences are exact in the compute dtype and
  ``|d| < 2**(p - 2)`` (p = 24 for float32, 53 for float64).
* Different classes: ``a / sqrt(m) == b / sqrt(n)`` for integers ``a, b`` and
  ``m != n`` in {1, 2, 3} only when ``a == b == 0`` (``n a^2 = m b^2`` has no other integer
  solutions), and otherwise the two scores differ by a relative amount of at least
  ``1 / (4 max(|a|, |b|)^2)``.  Rounding moves each score by at most ``2**-p`` relatively,
  so the order is exact while ``|d| < 2**((p - 4) / 2)``: 1024 in float32, 2**24 in float64.

Hence uint8/int8 (|d| <= 255) are computed in float32 and every other integer dtype in
float64: exact for uint16/int16 and for int32/uint32/int64/uint64 volumes whose value range
is below 2**24 (16.7 million; larger ranges are still correct except where two scores of
different distance classes agree to ~15 significant digits).  float32/float16/bfloat16
inputs are computed in float32 (differences are rounded once), float64 in float64; float
results agree with an exact float64 reference except where the top two scores are within
rounding.
"""

import numpy as np

from numvox._shared.arrays import Call, dask_implementation, is_dask
from numvox._shared.halfprec import FLOAT16, BFLOAT16, half_code, kernel_view
from numvox._shared.validate import check_choice, check_ndim, check_real_dtype

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


def neighbour_offsets():
    """``(27, 3)`` int array: the offset ``(da, db, dc)`` of each neighbour code."""
    k = np.arange(27)
    return np.stack([k // 9 - 1, (k // 3) % 3 - 1, k % 3 - 1], axis=1)


def _kernel_input(volume, V):
    """``(array, code, compute dtype)`` for the kernels.

    On a real GPU the shared conversion hands bfloat16 over as its uint16 bits; the original
    argument's dtype tells them apart from genuine uint16 data.
    """
    Vk, code = kernel_view(V)
    if code == 0 and np.dtype(Vk.dtype) == np.uint16 and "bfloat16" in str(getattr(volume, "dtype", "")):
        code = BFLOAT16
    cdtype = np.dtype(np.float32) if code else compute_dtype(Vk.dtype)
    return Vk, code, cdtype


def _check_volume(V, name="volume"):
    check_real_dtype(V, name, allow_int=True)
    if len(V.shape) == 2:
        raise ValueError(
            f"{name} has shape {tuple(V.shape)} (2-D); expected a 3-D volume. For a 2-D image "
            f"pass {name}[None] (a one-plane volume): with border='inside' its labels are the "
            f"3x3 analogue, with codes 9..17 (13 = local minimum)"
        )
    check_ndim(V, name, 3)


def _as_float(bits_or_values, code):
    """Host values of a kernel array (half-precision bits decoded) for error messages."""
    A = np.asarray(bits_or_values)
    if code == FLOAT16:
        return A.view(np.float16)
    if code == BFLOAT16:  # bfloat16 is the top half of a float32
        return (A.astype(np.uint32) << 16).view(np.float32)
    return A


def _nonfinite_error(values, name, count):
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


def labels_block_cpu(block, faces=((True, True),) * 3, border="inside", out=None):
    """Labels of one block of a larger volume (CPU, NumPy in and out): the chunk entry point.

    Parameters
    ----------
    block : ndarray, 3-D
        The block's voxels plus a one-voxel halo on every face that is *not* a face of the
        whole volume (a true face has no halo).  Any real dtype, half precision included.
    faces : ((bool, bool), (bool, bool), (bool, bool))
        For each axis, whether the block's low / high face is a true face of the volume.
    border : {"inside", "zero"}
        As in :func:`descent_labels`; with ``"zero"`` the voxels on true faces get 0.
    out : ndarray of uint8, optional
        C-contiguous, shape ``block.shape`` minus one per halo face.

    Returns
    -------
    labels : ndarray of uint8, shape ``block.shape`` minus the halos
        Exactly the labels that :func:`descent_labels` gives these voxels on the full volume.

    Raises
    ------
    ValueError
        If the block has NaN/inf values in its labelled region (halos are checked by the
        blocks that own them), or a halo face has no room for its halo.
    """
    check_choice(border, "border", BORDERS)
    _check_volume(block, "block")
    V, code = kernel_view(block)
    lo = [0 if faces[a][0] else 1 for a in range(3)]
    hi = [V.shape[a] if faces[a][1] else V.shape[a] - 1 for a in range(3)]
    if any(h < lo_ for h, lo_ in zip(hi, lo)):
        raise ValueError(f"block of shape {tuple(V.shape)} is too small for its halos (faces={faces})")
    shape = tuple(h - l for h, l in zip(hi, lo))
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
    _run_cpu_labels(V, code, out, lo, hi, compute_dtype(block.dtype), name="block")
    if border == "zero":
        _zero_true_faces(out, faces)
    return out


def _run_cpu_labels(V, code, out, lo, hi, cdtype, name="volume"):
    if out.size == 0:
        return
    import numba

    from ._cpu import labels_kernel

    w2, w3 = cdtype.type(W2), cdtype.type(W3)
    bad = labels_kernel(V, np.int64(code), np.empty(0, cdtype), out, *(np.int64(x) for x in (*lo, *hi)), w2, w3,
                        np.int64(numba.get_num_threads()))
    if bad:  # the kernel only detects; count them here (the error path)
        region = _as_float(V[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], code)
        raise _nonfinite_error(region, name, np.count_nonzero(~np.isfinite(region)))


def _zero_true_faces(out, faces):
    for a in range(3):
        if out.shape[a] == 0:
            continue
        idx = [slice(None)] * 3
        if faces[a][0]:
            idx[a] = 0
            out[tuple(idx)] = 0
        if faces[a][1]:
            idx[a] = out.shape[a] - 1
            out[tuple(idx)] = 0


def descent_labels(volume, *, border="inside", out=None, backend=None):
    """Label every voxel with its direction of steepest descent among its 26 neighbours.

    Parameters
    ----------
    volume : array_like, 3-D
        Any real dtype (bool excluded): uint8/int8/.../int64, float16, bfloat16, float32,
        float64; any memory order.  NumPy, TensorFlow, CuPy or ``__cuda_array_interface__``.
    border : {"inside", "zero"}
        ``"inside"`` (default): at the volume's faces only in-volume neighbours are
        candidates.  ``"zero"``: the outermost layer is labelled 0 and not computed (the
        behaviour of the seed's ``create_label2``).
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
        For a non-real dtype.
    ValueError
        For a 2-D or other non-3-D input (pass ``image[None]`` for the 3x3 analogue of a
        2-D image: codes 9..17), a volume with NaN or infinite values (with their count),
        a bad ``border`` or a mismatched ``out``.

    Notes
    -----
    Integer inputs give exact ties and orders (see the module notes of
    ``numvox.labels._api``: uint8/int8 are computed in float32, other integers in float64,
    exact for value ranges below 2**24).  Float inputs agree with a float64 reference except
    where the top two scores are within rounding.  The CPU kernel is tiled (O(tile) extra
    memory per thread); the CUDA kernel loads 10x10x10 shared-memory tiles for 8x8x8 outputs.
    If ``out`` is given and the volume has NaN values, ``out`` holds garbage when the
    ValueError is raised.

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
        return dask_implementation("descent_labels")(volume, border=border, out=out, backend=backend)
    call = Call(backend, volume=volume)
    V = call["volume"]
    _check_volume(V)
    shape = tuple(int(s) for s in V.shape)
    res = call.output(out, shape, np.uint8)
    if res.size == 0:
        return call.wrap(res)
    Vk, code, cdtype = _kernel_input(volume, V)
    faces = ((True, True),) * 3
    if call.backend == "cpu":
        _run_cpu_labels(Vk, code, res, [0, 0, 0], list(shape), cdtype)
    else:
        from ._cuda import launch_labels

        bad = launch_labels(Vk, code, res, cdtype, device_arrays=call.device_arrays)
        if bad:
            raise _nonfinite_error(_as_float(_to_host(Vk), code), "volume", bad)
    if border == "zero":
        if call.device_arrays:  # pragma: no cover - needs a GPU
            from ._cuda import zero_faces

            zero_faces(res)
        else:
            _zero_true_faces(res, faces)
    return call.wrap(res)


def basins_from_labels_cpu(labels, out=None):
    """Descent basins from ``border="inside"`` labels (CPU): the reusable second half.

    Parameters
    ----------
    labels : ndarray of uint8, 3-D, C-contiguous
        Output of :func:`descent_labels` (``border="inside"``) or of
        :func:`labels_block_cpu` for a block whose every face is a true face.
    out : ndarray of int32, optional
        C-contiguous, ``labels.shape``; it doubles as the union-find parent array.

    Returns
    -------
    basins : ndarray of int32
        Weakly connected components of the voxel -> target graph, numbered ``1..M`` in the
        C order of each component's first voxel.
    count : int
        ``M``.
    """
    from ._cpu import compress_and_number, target_offsets, unite_across_slabs, unite_within_slabs
    import numba

    n0, n1, n2 = labels.shape
    n = n0 * n1 * n2
    if n > MAX_BASIN_VOXELS:
        raise ValueError(
            f"volume has {n} voxels; descent_basins numbers voxels with int32 and handles at "
            f"most {MAX_BASIN_VOXELS}: process it in chunks"
        )
    if out is None:
        out = np.empty(labels.shape, np.int32)
    elif out.shape != labels.shape or out.dtype != np.int32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous int32 array of shape {labels.shape}")
    if n == 0:
        return out, 0
    L = np.ascontiguousarray(labels).reshape(n)
    P = out.reshape(n)
    plane = n1 * n2
    nslab = max(1, min(n0, 2 * numba.get_num_threads()))
    bounds = (np.linspace(0, n0, nslab + 1).round().astype(np.int64)) * plane
    off = target_offsets(np.int64(n1), np.int64(n2))
    unite_within_slabs(L, P, off, bounds)
    unite_across_slabs(L, P, off, bounds, np.int64(plane))
    count = compress_and_number(P, np.int64(plane))
    return out, int(count)


def block_basins_cpu(labels, origin=(0, 0, 0), volume_shape=None):
    """Chunk-local basins plus the edges that leave the chunk: the piece a chunked driver
    merges (labels -> targets -> components).

    Parameters
    ----------
    labels : ndarray of uint8, 3-D
        ``border="inside"`` labels of the chunk's own voxels (e.g. from
        :func:`labels_block_cpu`), computed on the whole volume's terms.
    origin : 3 ints
        Global index of ``labels[0, 0, 0]``.
    volume_shape : 3 ints, optional
        The whole volume's shape (default: ``labels.shape``, i.e. the chunk is the volume).

    Returns
    -------
    local : ndarray of int32, ``labels.shape``
        Components of the voxel -> target graph restricted to edges inside the chunk,
        numbered ``1..m`` by first voxel in the chunk's C order.
    src : ndarray of int32
        For every voxel whose target lies outside the chunk: its local component id.
    dst : ndarray of int64
        That target's global flat (C-order) index in the volume.

    Notes
    -----
    Global basins are the connected components of the graph whose nodes are the chunks'
    local components, with an edge from ``(chunk, src)`` to the local component holding
    global voxel ``dst``; renumbering the merged components by their first global voxel in
    C order reproduces :func:`descent_basins`.
    """
    L = np.ascontiguousarray(labels)
    shape = L.shape
    volume_shape = tuple(volume_shape or shape)
    k = L.astype(np.int64)
    offs = neighbour_offsets()
    coords = np.indices(shape, dtype=np.int64)
    tgt_local = [coords[a] + offs[k, a] for a in range(3)]
    outside = np.zeros(shape, bool)
    for a in range(3):
        outside |= (tgt_local[a] < 0) | (tgt_local[a] >= shape[a])
    inner = L.copy()
    inner[outside] = 13  # edges leaving the chunk are merged later
    local, _ = basins_from_labels_cpu(inner)
    src = local[outside]
    dst = np.ravel_multi_index(tuple(tgt_local[a][outside] + origin[a] for a in range(3)), volume_shape)
    return local, src.astype(np.int32), dst.astype(np.int64)


def descent_basins(volume, *, backend=None):
    """Basins of steepest descent: the watershed that :func:`descent_labels` defines.

    Every voxel points at its descent target (the neighbour its ``border="inside"`` label
    names; a local minimum points at itself).  Basins are the weakly connected components
    of this voxel -> target graph, so a flat minimum, whose equal voxels point at each
    other, is one basin.

    Parameters
    ----------
    volume : array_like, 3-D
        As for :func:`descent_labels` (finite values, any real dtype).
    backend : {None, "cpu", "cuda"}
        Where to run (default: where the data lives).

    Returns
    -------
    basins : int32 array of ``volume.shape``, in the caller's library
        Basin ids ``1..M``, numbered in the C order of each basin's first voxel.

    Raises
    ------
    TypeError, ValueError
        As :func:`descent_labels`; ValueError also for volumes of 2**31 voxels or more.

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
        return dask_implementation("descent_basins")(volume, backend=backend)
    call = Call(backend, volume=volume)
    V = call["volume"]
    _check_volume(V)
    shape = tuple(int(s) for s in V.shape)
    n = int(np.prod(shape))
    if n > MAX_BASIN_VOXELS:
        raise ValueError(
            f"volume has {n} voxels; descent_basins numbers voxels with int32 and handles at "
            f"most {MAX_BASIN_VOXELS}: process it in chunks"
        )
    res = call.output(None, shape, np.int32)
    if n == 0:
        return call.wrap(res)
    Vk, code, cdtype = _kernel_input(volume, V)
    if call.backend == "cpu":
        labels = np.empty(shape, np.uint8)
        _run_cpu_labels(Vk, code, labels, [0, 0, 0], list(shape), cdtype)
        basins_from_labels_cpu(labels, res)
    else:
        from ._cuda import launch_basins, launch_labels

        labels = call.empty(shape, np.uint8)
        bad = launch_labels(Vk, code, labels, cdtype, device_arrays=call.device_arrays)
        if bad:
            raise _nonfinite_error(_as_float(_to_host(Vk), code), "volume", bad)
        launch_basins(labels, res, device_arrays=call.device_arrays)
    return call.wrap(res)


def _to_host(V):
    return V if isinstance(V, np.ndarray) else V.copy_to_host()
