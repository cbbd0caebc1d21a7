"""Pixel-adaptive convolution (Su et al., CVPR 2019): public functions, checks, dispatch."""

import numpy as np

from .._shared.arrays import Call
from .._shared.halfprec import kernel_view
from .._shared.validate import as_int_tuple, check_choice, check_real_dtype

KERNELS = ("gaussian",)


# -- argument handling --------------------------------------------------------------------
def _is_f64(*arrays):
    return any(a is not None and np.dtype(a.dtype) == np.float64 for a in arrays)


def _check_inputs(x, guide, weight, bias, grad_out=None):
    """Shapes and dtypes; returns the number of spatial axes d (2 or 3)."""
    for a, name in ((x, "x"), (guide, "guide"), (weight, "weight"), (bias, "bias"), (grad_out, "grad_out")):
        if a is not None:
            check_real_dtype(a, name, allow_int=False)
    if len(weight.shape) not in (4, 5):
        raise ValueError(
            f"weight has shape {tuple(weight.shape)}; expected (kh, kw, C, O) for 2-D or "
            f"(kd, kh, kw, C, O) for 3-D (TensorFlow's filter layout)"
        )
    d = len(weight.shape) - 2
    for a, name, last in ((x, "x", "C"), (guide, "guide", "F")):
        if len(a.shape) != d + 2:
            raise ValueError(
                f"{name} has shape {tuple(a.shape)}; a {d}-D weight {tuple(weight.shape)} needs "
                f"{name} of shape (N, {', '.join('HW' if d == 2 else 'DHW')}, {last}) ({d + 2}-D)"
            )
    if tuple(x.shape[:-1]) != tuple(guide.shape[:-1]):
        raise ValueError(
            f"x and guide must agree in batch and spatial size: x has {tuple(x.shape)}, "
            f"guide has {tuple(guide.shape)}"
        )
    if x.shape[-1] != weight.shape[-2]:
        raise ValueError(
            f"weight has {weight.shape[-2]} input channels (shape {tuple(weight.shape)}) but x has "
            f"{x.shape[-1]} (shape {tuple(x.shape)})"
        )
    if any(k < 1 for k in weight.shape[:d]):
        raise ValueError(f"weight has an empty kernel axis: shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[-1],):
        raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({weight.shape[-1]},) (O of weight)")
    return d


def geometry(spatial, ksize, stride, padding, dilation):
    """``(stride, pad_lo, dilation, out_spatial)`` as tuples of ints, checked.

    ``padding="same"`` pads ``(k-1)*dilation//2`` before and the rest of ``(k-1)*dilation``
    after, so that the output has the input's size at stride 1 (for odd ``k`` both sides get
    ``(k-1)*dilation//2``).  ``"valid"`` pads nothing; an int or per-axis ints pad both sides.
    """
    d = len(ksize)
    stride = as_int_tuple(stride, d, "stride", minimum=1)
    dilation = as_int_tuple(dilation, d, "dilation", minimum=1)
    extent = tuple(dl * (k - 1) + 1 for k, dl in zip(ksize, dilation))
    if isinstance(padding, str):
        mode = check_choice(padding.lower(), "padding", ("same", "valid"))
        if mode == "valid":
            lo = hi = (0,) * d
        else:
            lo = tuple((e - 1) // 2 for e in extent)
            hi = tuple(e - 1 - p for e, p in zip(extent, lo))
    else:
        lo = hi = as_int_tuple(padding, d, "padding", minimum=0)
    padded = tuple(s + a + b for s, a, b in zip(spatial, lo, hi))
    if any(p < e for p, e in zip(padded, extent)):
        raise ValueError(
            f"kernel larger than the padded input: the dilated kernel spans {extent} but the "
            f"padded input is {padded} (input {tuple(spatial)}, padding {padding!r})"
        )
    out = tuple((p - e) // s + 1 for p, e, s in zip(padded, extent, stride))
    return stride, lo, dilation, out


def _embed(a, d):
    """A 3-D view of a 2-D problem (a size-1 leading spatial axis)."""
    if d == 3:
        return a
    if isinstance(a, np.ndarray):
        return a[:, None]
    return a.reshape((a.shape[0], 1) + tuple(a.shape[1:]))  # device arrays are contiguous


def _small_param(call, a, dtype, shape):
    """A small parameter (weight, bias) as a C-contiguous array of ``dtype`` on the backend."""
    if call.device_arrays:  # pragma: no cover - needs a GPU
        from numba import cuda

        host = a.copy_to_host()
        return cuda.to_device(np.ascontiguousarray(host.astype(dtype).reshape(shape)))
    return np.ascontiguousarray(np.asarray(a).astype(dtype, copy=False)).reshape(shape)


def _check_finite(call, arrays):
    if call.device_arrays:  # pragma: no cover - checked on host only
        return
    from ._cpu import count_nonfinite

    for name, a5 in arrays:
        if a5.size == 0:
            continue
        view, code = kernel_view(a5)
        bad = count_nonfinite(view, code)
        if bad:
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s); expected finite values")


def _prepare(call, names, stride, padding, dilation, kernel, normalize):
    x, guide, weight, bias = (call[n] if n else None for n in names)
    grad_out = call["grad_out"] if "grad_out" in call.arrays else None
    check_choice(kernel, "kernel", KERNELS)
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False; got {normalize!r}")
    d = _check_inputs(x, guide, weight, bias, grad_out)
    ksize = tuple(int(k) for k in weight.shape[:d])
    stride, lo, dilation, out_sp = geometry(tuple(x.shape[1:-1]), ksize, stride, padding, dilation)
    dtype = np.float64 if _is_f64(x, guide, weight, bias, grad_out) else np.float32
    N, C, F, O = int(x.shape[0]), int(x.shape[-1]), int(guide.shape[-1]), int(weight.shape[-1])
    pad3 = (lambda t, fill: (fill,) + tuple(t) if d == 2 else tuple(t))
    geo = dict(
        d=d,
        N=N, C=C, F=F, O=O,
        ks=np.array(pad3(ksize, 1), np.int64),
        st=np.array(pad3(stride, 1), np.int64),
        lo=np.array(pad3(lo, 0), np.int64),
        dl=np.array(pad3(dilation, 1), np.int64),
        out_sp=out_sp,
        out3=pad3(out_sp, 1),
        dtype=np.dtype(dtype),
    )
    T = int(np.prod(geo["ks"]))
    geo["T"] = T
    w3 = _small_param(call, weight, dtype, (T, C, O))
    b = None if bias is None else _small_param(call, bias, dtype, (O,))
    x5, g5 = _embed(x, d), _embed(guide, d)
    return geo, x5, g5, w3, b


# -- public functions ---------------------------------------------------------------------
def pac_conv(x, guide, weight, bias=None, *, stride=1, padding="same", dilation=1,
             kernel="gaussian", normalize=False, backend=None):
    """Pixel-adaptive convolution (PAC, Su et al., CVPR 2019), 2-D or 3-D, channels-last.

    ``out[n, i, o] = bias[o] + sum_t sum_c K(f[n, c_i], f[n, q]) * weight[t, c, o] * x[n, q, c]``

    where the window of output position ``i`` starts at ``o_i = i*stride - pad``, tap ``t``
    reads input position ``q = o_i + t*dilation`` and the window centre is
    ``c_i = o_i + (k//2)*dilation``.  The adaptive kernel is ``K(a, b) = exp(-||a - b||^2 / 2)``.
    Each window's kernel is computed once and reused for all channel pairs; no patch
    (im2col) buffers are built.

    Parameters
    ----------
    x : array, shape (N, H, W, C) or (N, D, H, W, C)
        Input; zero outside the image.  float16, bfloat16, float32 or float64.
    guide : array, shape (N, H, W, F) or (N, D, H, W, F)
        Guide features ``f`` (same batch and spatial size as ``x``; zero outside the image,
        which matters only for a window centre outside the image).
    weight : array, shape (kh, kw, C, O) or (kd, kh, kw, C, O)
        Filter in TensorFlow's layout; its rank picks 2-D or 3-D.
    bias : array, shape (O,), optional
    stride, dilation : int or sequence of ints (one per spatial axis)
    padding : {"same", "valid"} or int or sequence of ints
        ``"same"`` pads ``(k-1)*dilation//2`` before and ``(k-1)*dilation - that`` after each
        axis (the output has the input's size at stride 1; both sides are equal for odd
        ``k``); ``"valid"`` pads nothing; ints pad both sides of each axis.
    kernel : {"gaussian"}
    normalize : bool
        Divide ``K`` by its sum over the window's in-image taps (0 where that sum is 0).
    backend : {None, "cpu", "cuda"}

    Returns
    -------
    out : array, shape (N, *S_out, O)
        ``S_out = (S + pad_before + pad_after - dilation*(k-1) - 1)//stride + 1``.  float64
        if any input is float64, else float32; in the caller's array library.

    Raises
    ------
    TypeError
        Non-floating inputs, bad argument types.
    ValueError
        Shapes of ``x``, ``guide``, ``weight`` and ``bias`` that do not fit together, a
        kernel larger than the padded input, NaN or infinite inputs, bad options.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> x = np.ones((1, 8, 8, 2)); f = np.zeros((1, 8, 8, 3)); w = np.ones((3, 3, 2, 4))
    >>> numvox.pac_conv(x, f, w, normalize=True)[0, 4, 4]  # constant guide: a mean filter
    array([2., 2., 2., 2.])
    """
    call = Call(backend, x=x, guide=guide, weight=weight, bias=bias)
    geo, x5, g5, w3, b = _prepare(call, ("x", "guide", "weight", "bias"), stride, padding, dilation,
                                  kernel, normalize)
    N, O = geo["N"], geo["O"]
    shape5 = (N,) + geo["out3"] + (O,)
    res = call.output(None, shape5, geo["dtype"])
    if res.size:
        _check_finite(call, (("x", x5), ("guide", g5)))
        if not call.device_arrays:
            for name, a in (("weight", w3), ("bias", b)):
                if a is not None and not np.isfinite(a).all():
                    raise ValueError(f"{name} contains NaN or infinite values; expected finite values")
        xv, xc = kernel_view(x5)
        gv, gc = kernel_view(g5)
        bias_arr = b if b is not None else _zeros_like_backend(call, (max(O, 1),), geo["dtype"])
        if call.backend == "cpu":
            from .._shared.blas import single_threaded_blas
            from ._cpu import pac_forward

            with single_threaded_blas():  # the kernel calls BLAS from its threads
                pac_forward(xv, np.int64(xc), gv, np.int64(gc), w3, bias_arr, b is not None, geo["ks"],
                            geo["st"], geo["lo"], geo["dl"], bool(normalize), res)
        else:
            from ._cuda import forward

            forward(call, xv, xc, gv, gc, w3, bias_arr, b is not None, geo, bool(normalize), res)
    out_shape = (N,) + geo["out_sp"] + (O,)
    return call.wrap(res.reshape(out_shape))


def _zeros_like_backend(call, shape, dtype):
    return call.zeros(shape, dtype)


def pac_conv_backward(grad_out, x, guide, weight, *, stride=1, padding="same", dilation=1,
                      kernel="gaussian", normalize=False, backend=None):
    """Gradients of :func:`pac_conv` with respect to all its inputs.

    Parameters
    ----------
    grad_out : array, shape (N, *S_out, O)
        Gradient of the loss with respect to ``pac_conv``'s output.
    x, guide, weight, stride, padding, dilation, kernel, normalize, backend
        As given to :func:`pac_conv` (the bias does not enter the gradients).

    Returns
    -------
    grad_x, grad_guide, grad_weight, grad_bias : arrays
        Shapes of ``x``, ``guide``, ``weight`` and ``(O,)``; float64 if any input is float64,
        else float32.  ``grad_guide`` uses ``dK/df_q = K*(f_c - f_q) = -dK/df_c``.

    Raises
    ------
    TypeError, ValueError
        As :func:`pac_conv`, and for a ``grad_out`` whose shape is not the output's.

    Notes
    -----
    Fused like the forward pass: each window's kernel is recomputed (``F*T`` work) and used
    for the ``C*O`` channel pairs (blocks of 32 windows, two small GEMMs per block); the
    scatter into ``grad_x``/``grad_guide`` runs bands of output rows in two phases so that no
    two threads write the same input row; ``grad_weight`` and ``grad_bias`` are summed from
    per-thread partials (``threads * T*C*O`` values).  The CUDA kernels use atomics there.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> x = np.ones((1, 6, 6, 2)); f = np.zeros((1, 6, 6, 1)); w = np.ones((3, 3, 2, 1))
    >>> gx, gf, gw, gb = numvox.pac_conv_backward(np.ones((1, 6, 6, 1)), x, f, w)
    >>> gb
    array([36.])
    """
    call = Call(backend, grad_out=grad_out, x=x, guide=guide, weight=weight)
    geo, x5, g5, w3, _ = _prepare(call, ("x", "guide", "weight", None), stride, padding, dilation,
                                  kernel, normalize)
    go = call["grad_out"]
    N, C, F, O, T = geo["N"], geo["C"], geo["F"], geo["O"], geo["T"]
    expected = (N,) + geo["out_sp"] + (O,)
    if tuple(go.shape) != expected:
        raise ValueError(f"grad_out has shape {tuple(go.shape)}; expected the output's shape {expected}")
    go5 = _embed(go, geo["d"])
    dtype = geo["dtype"]
    gx = call.zeros(tuple(x5.shape), dtype)
    gg = call.zeros(tuple(g5.shape), dtype)
    if go5.size:
        _check_finite(call, (("grad_out", go5), ("x", x5), ("guide", g5)))
        if not call.device_arrays and not np.isfinite(w3).all():
            raise ValueError("weight contains NaN or infinite values; expected finite values")
    xv, xc = kernel_view(x5)
    gv, gc = kernel_view(g5)
    gov, gu = kernel_view(go5)
    if call.backend == "cpu":
        from .._shared.blas import single_threaded_blas
        from ._cpu import pac_backward, thread_count

        threads = thread_count()
        gw_part = np.zeros((threads, T, C, O), dtype)
        gb_part = np.zeros((threads, O), dtype)
        if go5.size:
            with single_threaded_blas():  # the kernel calls BLAS from its threads
                pac_backward(gov, np.int64(gu), xv, np.int64(xc), gv, np.int64(gc), w3, geo["ks"], geo["st"],
                             geo["lo"], geo["dl"], bool(normalize), gx, gg, gw_part, gb_part)
        gw = gw_part.sum(axis=0)
        gb = gb_part.sum(axis=0)
    else:
        from ._cuda import backward

        gw = call.zeros((T, C, O), dtype)
        gb = call.zeros((O,), dtype)
        if go5.size:
            backward(call, gov, gu, xv, xc, gv, gc, w3, geo, bool(normalize), gx, gg, gw, gb)
    gx = gx.reshape(tuple(call["x"].shape))
    gg = gg.reshape(tuple(call["guide"].shape))
    gw = gw.reshape(tuple(call["weight"].shape))
    return call.wrap((gx, gg, gw, gb))
