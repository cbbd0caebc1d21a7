"""Pixel-adaptive convolution (Su et al., CVPR 2019): the public functions, their dispatch to
the CPU (:mod:`._cpu`) and CUDA (:mod:`._cuda`) kernels, their ``OpSpec`` entries, and the
argument handling the family's other operators share.  Checks, geometry and
output shapes come from :mod:`._rules`."""

import numpy as np

from .._shared.arrays import Call
from .._shared.halfprec import kernel_view
from .._shared.ops import OpSpec
from ._params import kernel_param_grads
from ._rules import (
    check_inputs,
    check_options,
    geometry,
    output_shape,
    pac_backward_output_specs,
    pac_output_specs,
    result_dtype,
)

__all__ = ["PAC_OPS", "output_shape", "pac_conv", "pac_conv_backward"]


# -- argument handling --------------------------------------------------------------------
def embed(a, d):
    """A 3-D view of a 2-D problem (a size-1 leading spatial axis)."""
    if d == 3:
        return a
    if isinstance(a, np.ndarray):
        return a[:, None]
    return a.reshape((a.shape[0], 1) + tuple(a.shape[1:]))  # device arrays are contiguous


def small_param(call, a, dtype, shape):
    """A small parameter (weight, bias) as a C-contiguous array of ``dtype`` on the backend."""
    if call.device_arrays:  # pragma: no cover - needs a GPU
        from numba import cuda

        host = a.copy_to_host()
        return cuda.to_device(np.ascontiguousarray(host.astype(dtype).reshape(shape)))
    return np.ascontiguousarray(np.asarray(a).astype(dtype, copy=False)).reshape(shape)


def check_finite(call, arrays, params=()):
    """Raise ValueError for NaN or infinite values in the 5-D kernel inputs ``arrays`` or the
    small parameters ``params`` (``(name, array or None)`` pairs); host arrays only."""
    if call.device_arrays:  # pragma: no cover - checked on host only
        return
    for name, a in params:
        if a is not None and not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values; expected finite values")
    from ._cpu import count_nonfinite

    for name, a5 in arrays:
        if a5.size == 0:
            continue
        view, code = kernel_view(a5)
        bad = count_nonfinite(view, code)
        if bad:
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s); expected finite values")


def backward_arrays(call, geo, x5, g5, params=()):
    """``grad_out`` checked against the output shape and embedded, after a finiteness check
    of it, ``x5``, ``g5`` and ``params`` (if the output is not empty), and the zeroed
    gradients of ``x`` and ``guide``: ``(grad_out5, grad_x5, grad_guide5)``."""
    go = call["grad_out"]
    if tuple(go.shape) != geo["out_shape"]:
        raise ValueError(f"grad_out has shape {tuple(go.shape)}; expected the output's shape {geo['out_shape']}")
    go5 = embed(go, geo["d"])
    if go5.size:
        check_finite(call, (("grad_out", go5), ("x", x5), ("guide", g5)), params)
    return go5, call.zeros(tuple(x5.shape), geo["dtype"]), call.zeros(tuple(g5.shape), geo["dtype"])


def embed3(t, fill, d):
    """A per-axis tuple of a ``d``-D problem as 3 entries (``fill`` for the leading axis)."""
    return (fill,) + tuple(t) if d == 2 else tuple(t)


def window_geometry(d, ksize, stride, lo, dilation, out_shape, kp, dtype):
    """What the kernels need of a problem's geometry: int64 arrays of 3 ``ks``, ``st``,
    ``lo``, ``dl`` (3-D embedding), ``T`` taps, the output shape and its 3 spatial sizes
    ``out3``, the kernel kind ``kp`` and the compute ``dtype``."""
    geo = dict(
        d=d,
        ks=np.array(embed3(ksize, 1, d), np.int64),
        st=np.array(embed3(stride, 1, d), np.int64),
        lo=np.array(embed3(lo, 0, d), np.int64),
        dl=np.array(embed3(dilation, 1, d), np.int64),
        out_shape=tuple(out_shape),
        out3=embed3(out_shape[1:-1], 1, d),
        dtype=dtype,
        kp=kp,
    )
    geo["T"] = int(np.prod(geo["ks"]))
    return geo


def host_params(call):
    """The ``kernel_params`` array of a call on the host (None when not given)."""
    a = call.arrays.get("kernel_params")
    if a is not None and call.device_arrays:  # pragma: no cover - needs a GPU
        a = a.copy_to_host()
    return a


def _prepare(call, names, stride, padding, dilation, kernel, normalize, params_grad=False):
    x, guide, weight, bias = (call[n] if n else None for n in names)
    grad_out = call["grad_out"] if "grad_out" in call.arrays else None
    kp = check_options(kernel, normalize, host_params(call), params_grad)
    d = check_inputs(x, guide, weight, bias, grad_out)
    ksize = tuple(int(k) for k in weight.shape[:d])
    N, C, F, O = int(x.shape[0]), int(x.shape[-1]), int(guide.shape[-1]), int(weight.shape[-1])
    out_shape = tuple(output_shape(x.shape, ksize, stride, padding, dilation, O))
    stride, lo, dilation, _ = geometry(tuple(x.shape[1:-1]), ksize, stride, padding, dilation)
    dtype = result_dtype(*(a.dtype for a in (x, guide, weight, bias, grad_out) if a is not None))
    geo = window_geometry(d, ksize, stride, lo, dilation, out_shape, kp, dtype)
    geo.update(N=N, C=C, F=F, O=O)
    T = geo["T"]
    w3 = small_param(call, weight, dtype, (T, C, O))
    b = None if bias is None else small_param(call, bias, dtype, (O,))
    x5, g5 = embed(x, d), embed(guide, d)
    return geo, x5, g5, w3, b


# -- public functions ---------------------------------------------------------------------
def pac_conv(x, guide, weight, bias=None, *, stride=1, padding="same", dilation=1,
             kernel="gaussian", kernel_params=None, normalize=False, backend=None):
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
    kernel : str
        The adaptive kernel: ``"gaussian"`` (above) or pacnet's inverse kernel
        ``"inv_{alpha}_{lambda}"``, ``K = alpha + (sum(Delta**2) + 1e-4)**(lambda/2)`` with
        ``Delta = f_q - f_c``, optionally ending in ``"_asym"`` (``Delta`` rectified) and
        ``"_fixed"`` (alpha and lambda not trained by the Keras layers).
    kernel_params : array of 2, optional
        ``[alpha, lambda]`` of an inverse kernel, overriding the values in its name (e.g.
        trained values; :func:`pac_conv_backward` gives their gradient).  Inverse kernels only.
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
        ``None`` or an object that is no array for an array argument, or a dtype no kernel
        reads (object, str, structured, complex, datetime, TensorFlow string/quantised
        tensors), naming the argument; non-floating inputs; bad argument types.
    ValueError
        Shapes of ``x``, ``guide``, ``weight`` and ``bias`` that do not fit together, a
        kernel larger than the padded input, NaN or infinite inputs, bad options, integer
        arguments beyond 2**31 - 1 (``stride=10**30``).
    MemoryError
        A result that would not fit in this machine's memory (stated size; nothing allocated).
    numvox.CudaUnavailableError
        ``backend="cuda"`` where no CUDA GPU (or the simulator) can run.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> x = np.ones((1, 8, 8, 2)); f = np.zeros((1, 8, 8, 3)); w = np.ones((3, 3, 2, 4))
    >>> numvox.pac_conv(x, f, w, normalize=True)[0, 4, 4]  # constant guide: a mean filter
    array([2., 2., 2., 2.])
    """
    call = Call(backend, optional=("bias", "kernel_params"), x=x, guide=guide, weight=weight, bias=bias,
                kernel_params=kernel_params)
    geo, x5, g5, w3, b = _prepare(call, ("x", "guide", "weight", "bias"), stride, padding, dilation,
                                  kernel, normalize)
    N, O = geo["N"], geo["O"]
    shape5 = (N,) + geo["out3"] + (O,)
    res = call.output(None, shape5, geo["dtype"])
    if res.size:
        check_finite(call, (("x", x5), ("guide", g5)), (("weight", w3), ("bias", b)))
        _launch(call, geo, x5, g5, w3, b, normalize, res)
    return call.wrap(res.reshape(geo["out_shape"]))


def forward_operands(call, geo, x5, g5, w3, b):
    """``(xv, xc, gv, gc, bias)`` of a forward launch: the kernel views (and half-precision
    codes) of the embedded input and guide, and the bias, zeros when there is none (the
    kernels take an array and a flag)."""
    xv, xc = kernel_view(x5)
    gv, gc = kernel_view(g5)
    bias = b if b is not None else call.zeros((max(int(w3.shape[-1]), 1),), geo["dtype"])
    return xv, xc, gv, gc, bias


def _launch(call, geo, x5, g5, w3, b, normalize, res):
    """The forward kernels of ``geo`` (kernel kind ``geo["kp"]``) into ``res``."""
    xv, xc, gv, gc, bias_arr = forward_operands(call, geo, x5, g5, w3, b)
    if call.backend == "cpu":
        from .._shared.blas import single_threaded_blas
        from ._cpu import pac_forward

        with single_threaded_blas():  # the kernel calls BLAS from its threads
            pac_forward(xv, np.int64(xc), gv, np.int64(gc), w3, bias_arr, b is not None, geo["ks"],
                        geo["st"], geo["lo"], geo["dl"], geo["kp"], bool(normalize), res)
    else:
        from ._cuda import forward

        forward(call, xv, xc, gv, gc, w3, bias_arr, b is not None, geo, bool(normalize), res)


def weighted_launch(call, geo, g5, launch):
    """``launch(kp, x, w, normalize, out)`` for :func:`._params.kernel_param_grads` of an
    operator with a weight, from its ``launch(call, geo, x5, g5, w3, b, normalize, res)``."""
    def run(kp, x5, w3, normalize, out):
        sub = {**geo, "kp": kp, "C": int(x5.shape[-1]), "O": int(w3.shape[-1])}
        launch(call, sub, x5, g5, w3, None, normalize, out)

    return run


def pac_conv_backward(grad_out, x, guide, weight, *, stride=1, padding="same", dilation=1,
                      kernel="gaussian", kernel_params=None, kernel_params_grad=False, normalize=False,
                      backend=None):
    """Gradients of :func:`pac_conv` with respect to all its inputs.

    Parameters
    ----------
    grad_out : array, shape (N, *S_out, O)
        Gradient of the loss with respect to ``pac_conv``'s output.
    x, guide, weight, stride, padding, dilation, kernel, kernel_params, normalize, backend
        As given to :func:`pac_conv` (the bias does not enter the gradients).
    kernel_params_grad : bool
        Also return ``grad_kernel_params``, the gradient with respect to the inverse
        kernel's ``[alpha, lambda]`` (``kernel_params``, or the values in the kernel's
        name).  Inverse kernels only.

    Returns
    -------
    grad_x, grad_guide, grad_weight, grad_bias : arrays
        Shapes of ``x``, ``guide``, ``weight`` and ``(O,)``; float64 if any input is float64,
        else float32.  ``grad_guide`` uses ``dK/df_q = K*(f_c - f_q) = -dK/df_c``.
    grad_kernel_params : array, shape (2,)
        Only with ``kernel_params_grad=True``: ``[dL/dalpha, dL/dlambda]``, dtype as the
        others.

    Raises
    ------
    TypeError, ValueError, MemoryError, numvox.CudaUnavailableError
        As :func:`pac_conv`, and ValueError for a ``grad_out`` whose shape is not the output's.

    Notes
    -----
    Fused like the forward pass: each window's kernel is recomputed (``F*T`` work) and used
    for the ``C*O`` channel pairs (blocks of 32 windows, two small GEMMs per block); the
    scatter into ``grad_x``/``grad_guide`` runs bands of output rows in two phases so that no
    two threads write the same input row; ``grad_weight`` and ``grad_bias`` are summed from
    per-thread partials (``threads * T*C*O`` values).  The CUDA kernels use atomics there.
    ``kernel_params_grad`` adds two forward passes (``normalize=False``) or three full and
    three one-channel forward passes (``normalize=True``): the operator is linear in ``K``,
    and ``dK/dalpha``, ``dK/dlambda`` are kernel kinds of their own.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> x = np.ones((1, 6, 6, 2)); f = np.zeros((1, 6, 6, 1)); w = np.ones((3, 3, 2, 1))
    >>> gx, gf, gw, gb = numvox.pac_conv_backward(np.ones((1, 6, 6, 1)), x, f, w)
    >>> gb
    array([36.])
    """
    call = Call(backend, optional=("kernel_params",), grad_out=grad_out, x=x, guide=guide, weight=weight,
                kernel_params=kernel_params)
    geo, x5, g5, w3, _ = _prepare(call, ("x", "guide", "weight", None), stride, padding, dilation,
                                  kernel, normalize, kernel_params_grad)
    C, O, T, dtype = geo["C"], geo["O"], geo["T"], geo["dtype"]
    go5, gx, gg = backward_arrays(call, geo, x5, g5, (("weight", w3),))
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
                             geo["lo"], geo["dl"], geo["kp"], bool(normalize), gx, gg, gw_part, gb_part)
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
    if not kernel_params_grad:
        return call.wrap((gx, gg, gw, gb))
    gkp = kernel_param_grads(call, gov, gu, x5, w3, geo["kp"], bool(normalize),
                             weighted_launch(call, geo, g5, _launch), 1, dtype)
    return call.wrap((gx, gg, gw, gb, gkp))


PAC_OPS = (
    OpSpec("pac_conv", pac_conv, ("x", "guide", "weight", "bias", "kernel_params"), pac_output_specs),
    OpSpec("pac_conv_backward", pac_conv_backward, ("grad_out", "x", "guide", "weight", "kernel_params"),
           pac_backward_output_specs),
)
