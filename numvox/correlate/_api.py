"""Public API of the batched cross-correlation: validation, geometry, method choice, dispatch."""

import math
import numbers

import numpy as np

from numvox._shared.arrays import Call, dask_implementation, is_dask
from numvox._shared.halfprec import NATIVE, half_code, kernel_view
from numvox._shared.validate import check_choice, check_real_dtype

from ._progress import progress_bar

MODES = ("full", "same", "valid")
REDUCES = ("max", "argmax")
METHODS = ("auto", "direct", "fft")
MAX_ITEM_NDIM = 4


def correlate_batch(images, filters, *, mode="same", channel_axis=None, reduce=None, normalize=False,
                    method="auto", out=None, progress=False, backend=None):
    """Cross-correlate every image of a batch with every filter of a bank.

    Parameters
    ----------
    images : array_like, shape (N, *S)
        N images; each item has 1 to 4 dimensions.  Real floating (float16, bfloat16,
        float32, float64) or integer dtype.  NumPy, CuPy, TensorFlow or any
        ``__cuda_array_interface__`` / ``__dlpack__`` array; any strides.
    filters : array_like, shape (K, *s)
        K filters, with as many dimensions as ``images``.
    mode : {"same", "full", "valid"}
        Output size, as :func:`scipy.signal.correlate` defines it.  ``"valid"`` needs every
        filter axis no longer than the image axis (SciPy swaps the inputs when the filter is
        larger along *every* axis; numvox raises ValueError instead).
    channel_axis : int or None
        None (default): each pair's result is ``scipy.signal.correlate(images[n], filters[k],
        mode)`` over all item axes (the channel axis too, if any).  An int (an axis of
        ``images``, not 0, e.g. -1): that axis holds channels, which must match and are summed,
        not correlated: ``sum_c correlate(images[n][..., c], filters[k][..., c])`` (CNN /
        multichannel template-matching semantics); the output has no channel axis.
    reduce : {None, "max", "argmax"}
        None: the full maps ``(N, K, *O)``.  ``"max"``: their maxima ``(N, K)``.
        ``"argmax"``: ``(values, positions)``, ``positions`` int64 ``(N, K, ndim)`` in output
        coordinates (the first occurrence in C order on exact ties).  With a reduction the
        ``(N, K, *O)`` maps are never materialised: work proceeds in blocks of bounded memory.
    normalize : bool
        Zero-normalised cross-correlation: the Pearson coefficient of the filter and the image
        window under it (over all channels when ``channel_axis`` is set), out-of-image values
        taken as 0, and 0 where either has zero variance; for ``mode="valid"`` this is
        :func:`skimage.feature.match_template`.
    method : {"auto", "direct", "fft"}
        ``"direct"``: Numba/CUDA sliding-window kernels; ``"fft"``: transforms once per image
        and per filter (``scipy.fft`` with worker threads on the CPU, CuPy's cuFFT on a GPU);
        ``"auto"`` picks the cheaper by an operation-count estimate.  Both agree within 1e-4
        of the result's scale for float32 inputs.
    out : ndarray, optional
        Where to write the result (reduce None or "max"), or a ``(values, positions)`` pair
        (reduce "argmax"); C-contiguous, of the result's shape and dtype.
    progress : bool
        Show a progress bar on stderr (tqdm when installed).
    backend : {None, "cpu", "cuda"}
        Where to run; None follows the data.

    Returns
    -------
    ndarray or (ndarray, ndarray)
        float32 when both inputs are float32 / float16 / bfloat16, else float64; in the
        caller's array library.  Shape ``(N, K, *O)``, ``(N, K)``, or ``((N, K), (N, K, ndim))``,
        where ``O`` is the per-item output shape of ``mode`` (without the channel axis when
        ``channel_axis`` is set) and ``ndim`` its length.

    Raises
    ------
    TypeError
        Complex, boolean or non-numeric dtypes; a bad option type.
    ValueError
        Different numbers of dimensions, items that are not 1-D to 4-D, unequal channel
        counts, a zero-length item axis, filters longer than the images in ``"valid"`` mode,
        NaN or infinite values, values so large that the sums would overflow, bad options.

    Notes
    -----
    Empty batches (``N == 0`` or ``K == 0``) return empty results.  Integer inputs are
    converted to float64 (a copy).  On CUDA, ``method="fft"`` and ``normalize=True`` need CuPy
    (``"auto"`` falls back to the shared-memory direct kernel without it).  Cost: the direct path does
    ``N K C prod(O) prod(s)`` multiply-adds; the FFT path ``N + K`` forward and ``N K``
    inverse transforms of ``prod(F)`` points (``F`` a little over ``S + s // 2`` for "same").

    Examples
    --------
    >>> import numpy as np, numvox
    >>> rng = np.random.default_rng(0)
    >>> imgs = rng.random((4, 32, 32, 3), dtype=np.float32)
    >>> filts = rng.random((5, 8, 8, 3), dtype=np.float32)
    >>> numvox.correlate_batch(imgs, filts, reduce="max").shape
    (4, 5)
    >>> numvox.correlate_batch(imgs, filts, channel_axis=-1, mode="valid").shape
    (4, 5, 25, 25)
    """
    if is_dask(images) or is_dask(filters):
        return dask_implementation("correlate_batch")(
            images, filters, mode=mode, channel_axis=channel_axis, reduce=reduce, normalize=normalize,
            method=method, out=out, progress=progress, backend=backend,
        )
    call = Call(backend, images=images, filters=filters)
    A, B = call["images"], call["filters"]
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
    check_real_dtype(A, "images", allow_int=True)
    check_real_dtype(B, "filters", allow_int=True)
    geom = _geometry(tuple(A.shape), tuple(B.shape), mode, channel_axis)
    N, K, O = geom["N"], geom["K"], geom["O"]
    out_dtype = np.float32 if (_is_single(A.dtype) and _is_single(B.dtype)) else np.float64

    # outputs
    if reduce is None:
        res = call.output(out, (N, K, *O), out_dtype)
        values = positions = None
    else:
        out_v = out_p = None
        if reduce == "argmax" and out is not None:
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise TypeError("with reduce='argmax', out must be a (values, positions) pair")
            out_v, out_p = out
        elif out is not None:
            out_v = out
        values = call.output(out_v, (N, K), out_dtype, name="out")
        positions = call.output(out_p, (N, K, len(O)), np.int64, name="out positions") if reduce == "argmax" else None
        res = None

    def result():
        if reduce is None:
            return call.wrap(res)
        if reduce == "max":
            return call.wrap(values)
        return call.wrap((values, positions))

    if N == 0 or K == 0:
        return result()

    A, B = _as_float(A, call), _as_float(B, call)
    _check_values(call, A, B, geom, out_dtype, normalize)

    if method == "auto":
        method = choose_method(geom, call)
    elif method == "fft" and call.device_arrays and not _have_cupy():  # pragma: no cover
        raise ImportError("method='fft' on CUDA needs CuPy (pip install 'numvox[gpu]'); use method='direct'")

    bar = progress_bar(progress, N * K)
    try:
        if method == "fft":
            _run_fft(call, A, B, geom, out_dtype, reduce, normalize, res, values, positions, bar)
        else:
            from ._direct import run_direct

            run_direct(call, A, B, geom, out_dtype, reduce, normalize, res, values, positions, bar)
    finally:
        bar.close()
    return result()


def _is_single(dtype):
    dtype = np.dtype(dtype)
    return dtype == np.float32 or half_code(dtype) != NATIVE


def _geometry(ashape, bshape, mode, channel_axis):
    """Shapes of the problem: batch sizes, channel axis, spatial shapes, offsets, output."""
    nd = len(ashape)
    if nd != len(bshape):
        raise ValueError(
            f"images has shape {ashape} ({nd}-D) and filters has shape {bshape} ({len(bshape)}-D); "
            "they need the same number of dimensions: (N, *item) and (K, *item)"
        )
    if not 2 <= nd <= MAX_ITEM_NDIM + 1:
        raise ValueError(
            f"images has shape {ashape}; expected (N, *item) with 1-D to {MAX_ITEM_NDIM}-D items "
            f"(2-D to {MAX_ITEM_NDIM + 1}-D arrays)"
        )
    if channel_axis is None:
        ca = None
        spatial = list(range(1, nd))
        C = 1
    else:
        if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis, numbers.Integral):
            raise TypeError(f"channel_axis must be None or an int; got {channel_axis!r}")
        ca = int(channel_axis)
        if not -nd <= ca < nd:
            raise ValueError(f"channel_axis={channel_axis} is out of range for images of shape {ashape}")
        ca %= nd
        if ca == 0:
            raise ValueError("channel_axis cannot be axis 0, which is the batch axis (N images, K filters)")
        if nd == 2:
            raise ValueError(
                f"channel_axis={channel_axis} leaves no spatial axis in items of shape {ashape[1:]}; "
                "use channel_axis=None"
            )
        C = ashape[ca]
        if bshape[ca] != C:
            raise ValueError(
                f"images has {C} channels (axis {ca} of {ashape}) but filters has {bshape[ca]} "
                f"(axis {ca} of {bshape}); channel counts must match with channel_axis set"
            )
        spatial = [a for a in range(1, nd) if a != ca]
    S = [ashape[a] for a in spatial]
    s = [bshape[a] for a in spatial]
    if min(S + s + [C]) == 0:
        raise ValueError(
            f"images items {ashape[1:]} and filters items {bshape[1:]} must have no zero-length axis "
            "(empty batches, N == 0 or K == 0, are fine)"
        )
    lo, O = [], []
    for Sd, sd in zip(S, s):
        if mode == "full":
            lo.append(-(sd - 1))
            O.append(Sd + sd - 1)
        elif mode == "same":
            lo.append(-(sd // 2))
            O.append(Sd)
        else:
            if sd > Sd:
                raise ValueError(
                    f"mode='valid' needs filters no larger than images along every correlated axis; "
                    f"images items are {tuple(S)}, filters items {tuple(s)}"
                    + (" (channel axis excluded)" if ca is not None else "")
                )
            lo.append(0)
            O.append(Sd - sd + 1)
    return {"N": ashape[0], "K": bshape[0], "ca": ca, "spatial": spatial, "C": C, "S": S, "s": s,
            "lo": lo, "O": O, "mode": mode}


def _restride(a, shape, strides):
    if isinstance(a, np.ndarray):
        return np.lib.stride_tricks.as_strided(a, shape, strides, writeable=False)
    from numba.cuda.cudadrv.devicearray import DeviceNDArray  # pragma: no cover - needs a GPU

    return DeviceNDArray(shape, strides, a.dtype, gpu_data=a.gpu_data)  # pragma: no cover


def canonical(a, geom):
    """The 6-D kernel view ``(B, C, D0, D1, D2, D3)`` of ``a`` (its own dtype; no copy)."""
    st = tuple(a.strides)
    pad = MAX_ITEM_NDIM - len(geom["spatial"])
    ca = geom["ca"]
    shape = (a.shape[0], geom["C"]) + (1,) * pad + tuple(a.shape[x] for x in geom["spatial"])
    strides = (st[0], 0 if ca is None else st[ca]) + (0,) * pad + tuple(st[x] for x in geom["spatial"])
    return _restride(a, shape, strides)


def _as_float(a, call):
    """Integer inputs as a float64 copy (kernels read float16/bfloat16/float32/float64 only)."""
    if half_code(a.dtype) != NATIVE or np.dtype(a.dtype).kind == "f":
        return a
    if isinstance(a, np.ndarray):
        return a.astype(np.float64)
    import cupy  # pragma: no cover - needs a GPU
    from numba import cuda  # pragma: no cover

    return cuda.as_cuda_array(cupy.asarray(a).astype(np.float64))  # pragma: no cover


def _channels_first(a, geom):
    """``(B, C, *spatial)`` view of an input in its own dtype (FFT path)."""
    if geom["ca"] is None:
        return a[:, None]
    if isinstance(a, np.ndarray):
        return np.moveaxis(a, geom["ca"], 1)
    import cupy  # pragma: no cover - needs a GPU

    return cupy.moveaxis(cupy.asarray(a), geom["ca"], 1)  # pragma: no cover


def _have_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


def _check_values(call, A, B, geom, out_dtype, normalize):
    """Reject NaN / inf inputs and magnitudes whose sums could overflow ``out_dtype``."""
    for a, name in ((A, "images"), (B, "filters")):
        arr, code = kernel_view(canonical(a, geom))
        if call.device_arrays:  # pragma: no cover - needs a GPU
            from ._cuda import scan_values_device

            bad, big = scan_values_device(arr, code)
        else:
            from ._cpu import flat_view, scan_values

            flat, base, st = flat_view(arr)
            bad, big = scan_values(flat, np.int64(code), base, np.array(arr.shape, dtype=np.int64), st)
        if bad:
            raise ValueError(
                f"{name} contains {int(bad)} NaN or infinite value(s); correlations of non-finite "
                "values are undefined: clean or mask them first"
            )
        if name == "images":
            big_i = float(big)
        else:
            big_f = float(big)
    taps = geom["C"] * math.prod(geom["s"])
    limit = float(np.finfo(out_dtype).max) / 16
    worst = big_i * big_f * taps
    if normalize:
        worst = max(worst, big_i * big_i * taps, big_f * big_f * taps)
    if not worst < limit:
        raise ValueError(
            f"values too large: |images| up to {big_i:.3g} and |filters| up to {big_f:.3g} over "
            f"{taps} taps could overflow {np.dtype(out_dtype).name} sums; rescale the inputs"
            + (" or pass float64 arrays" if out_dtype == np.float32 else "")
        )


def fft_cost(geom):
    from ._fft import fft_sizes

    N, K, C = geom["N"], geom["K"], geom["C"]
    F = fft_sizes(geom["S"], geom["s"], geom["lo"], geom["O"])
    P = math.prod(F)
    lg = math.log2(max(P, 2))
    # forward transforms, then per pair: C complex multiply-adds per frequency + inverse transform
    return 2.5 * P * lg * (N * C + K * C + N * K) / 2 + N * K * C * P * 2


def direct_cost(geom):
    return geom["N"] * geom["K"] * geom["C"] * math.prod(geom["O"]) * math.prod(geom["s"])


def choose_method(geom, call):
    """``"direct"`` or ``"fft"``, by estimated cost (FFT work counted as ~3 direct MACs per flop)."""
    if call.device_arrays and not _have_cupy():  # pragma: no cover - needs a GPU
        return "direct"
    return "fft" if 3.0 * fft_cost(geom) < direct_cost(geom) else "direct"


def _run_fft(call, A, B, geom, out_dtype, reduce, normalize, res, values, positions, bar):
    from ._fft import correlate_fft

    N, K, O = geom["N"], geom["K"], geom["O"]
    if call.device_arrays:  # pragma: no cover - needs a GPU
        import cupy as xp

        A, B = xp.asarray(A), xp.asarray(B)
        res = None if res is None else xp.asarray(res)
    else:
        xp = np
    vals = flat = None
    if reduce is not None:
        vals = xp.asarray(values) if call.device_arrays else values
        flat = xp.empty((N, K), dtype=np.int64)
    correlate_fft(xp, A, B, geom, np.dtype(out_dtype).type, reduce, normalize, res, vals, flat, bar)
    if reduce == "argmax":
        pos = xp.stack(xp.unravel_index(flat, tuple(O)), axis=-1).astype(np.int64)
        if call.device_arrays:  # pragma: no cover - needs a GPU
            xp.asarray(positions)[...] = pos
        else:
            positions[...] = pos
