"""Public function of the batched cross-correlation: Dask inputs go to the Dask driver, the
others to the in-memory path."""

from numvox._shared.arrays import is_dask

from ._inmemory import correlate_arrays


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
        ``None`` or an object that is no array for an array argument, or a dtype no kernel
        reads (object, str, structured, complex, datetime, TensorFlow string/quantised
        tensors), naming the argument; boolean dtypes; a bad option type.
    ValueError
        Different numbers of dimensions, items that are not 1-D to 4-D, unequal channel
        counts, a zero-length item axis, filters longer than the images in ``"valid"`` mode,
        NaN or infinite values, values so large that the sums would overflow, bad options,
        ``out`` sharing memory with an input.
    MemoryError
        A result that would not fit in this machine's memory (stated size; nothing allocated).
    numvox.CudaUnavailableError
        ``backend="cuda"`` where no CUDA GPU (or the simulator) can run.

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
    kw = dict(mode=mode, channel_axis=channel_axis, reduce=reduce, normalize=normalize, method=method, out=out,
              progress=progress, backend=backend)
    if is_dask(images) or is_dask(filters):
        from ._dask import correlate_batch_dask

        return correlate_batch_dask(images, filters, **kw)
    return correlate_arrays(images, filters, **kw)
