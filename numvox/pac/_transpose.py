"""Transposed PAC (pacnet's ``pacconv_transpose2d``, joint upsampling): the public
functions and their dispatch to the CPU (:mod:`._transpose_cpu`) and CUDA
(:mod:`._transpose_cuda`) kernels."""

import numpy as np

from .._shared.arrays import Call
from .._shared.halfprec import kernel_view
from ._api import (
    backward_arrays,
    check_finite,
    embed,
    embed3,
    forward_operands,
    host_params,
    small_param,
    weighted_launch,
    window_geometry,
)
from ._params import kernel_param_grads
from ._rules import check_inputs, check_options, result_dtype, transpose_geometry

__all__ = ["pac_conv_transpose", "pac_conv_transpose_backward"]


def _prepare(call, stride, padding, output_padding, dilation, kernel, normalize, params_grad=False):
    x, guide, weight = call["x"], call["guide"], call["weight"]
    bias = call["bias"] if "bias" in call.arrays else None
    grad_out = call["grad_out"] if "grad_out" in call.arrays else None
    kp = check_options(kernel, normalize, host_params(call), params_grad)
    d = check_inputs(x, guide, weight, bias, grad_out, same_size=False)
    ksize = tuple(int(k) for k in weight.shape[:d])
    stride, P, half, dilation, out_sp = transpose_geometry(tuple(x.shape[1:-1]), ksize, stride, padding,
                                                           output_padding, dilation)
    if tuple(guide.shape[1:-1]) != out_sp:
        raise ValueError(
            f"guide has shape {tuple(guide.shape)} but the transposed PAC of x {tuple(x.shape)} has output size "
            f"{out_sp}: the guide must have the output's spatial size"
        )
    O = int(weight.shape[-1])
    dtype = result_dtype(*(a.dtype for a in (x, guide, weight, bias, grad_out) if a is not None))
    geo = window_geometry(d, ksize, stride, half, dilation, (int(x.shape[0]), *out_sp, O), kp, dtype)
    geo.update(P=np.array(embed3(P, 0, d), np.int64), hf=geo["lo"], C=int(x.shape[-1]), O=O)
    w3 = small_param(call, weight, dtype, (geo["T"], geo["C"], O))
    b = None if bias is None else small_param(call, bias, dtype, (O,))
    return geo, embed(x, d), embed(guide, d), w3, b


def pac_conv_transpose(x, guide, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                       kernel="gaussian", kernel_params=None, normalize=False, backend=None):
    """Transposed pixel-adaptive convolution (pacnet's ``pacconv_transpose2d``): guided
    upsampling, 2-D or 3-D, channels-last.

    ``x`` is zero-inserted by ``stride`` and padded by ``P = (k-1)*dilation - padding``
    before and ``P + output_padding`` after each axis (``x_z``); then

    ``out[n, i, o] = bias[o] + sum_t K_t(n, i) * sum_c weight[t, c, o] * x_z[n, i + t*dilation, c]``

    (no spatial flip of ``weight``), where ``K_t(i)`` compares the guide at
    ``i + t*dilation - (k-1)*dilation//2`` with the guide at the window's centre tap
    (zero outside the guide) and is 0 for taps on inserted zeros.  The kernels visit only
    the taps that hit real input pixels (about ``1/stride^d`` of them) and never build
    ``x_z``.

    Parameters
    ----------
    x : array, shape (N, h, w, C) or (N, d, h, w, C)
        Input at the low resolution.  float16, bfloat16, float32 or float64.
    guide : array, shape (N, H, W, F) or (N, D, H, W, F)
        Guide features at the **output** resolution
        ``S = (s-1)*stride - 2*padding + dilation*(k-1) + 1 + output_padding``.
    weight : array, shape (kh, kw, C, O) or (kd, kh, kw, C, O)
        Filter; its rank picks 2-D or 3-D.  A TensorFlow ``Conv2DTranspose`` /
        ``tf.nn.conv2d_transpose`` kernel ``k_tf`` (layout ``(kh, kw, O, C)``) maps to
        ``weight = k_tf[::-1, ::-1].swapaxes(-1, -2)`` (spatially flipped, C and O swapped);
        a pacnet/PyTorch weight ``(C, O, kh, kw)`` to ``w.permute(2, 3, 0, 1)``.
    bias : array, shape (O,), optional
    stride, dilation : int or sequence of ints
    padding : int or sequence of ints
        pacnet's (and PyTorch's) ``padding`` of a transposed convolution (``>= 0``).
    output_padding : int or sequence of ints
        Extra output size after each axis, smaller than the stride or the dilation.
    kernel : str
        As :func:`numvox.pac_conv`: ``"gaussian"`` or ``"inv_{alpha}_{lambda}"`` with
        optional ``"_asym"`` / ``"_fixed"``.
    kernel_params : array of 2, optional
        ``[alpha, lambda]`` of an inverse kernel, overriding its name's values (as
        :func:`numvox.pac_conv`).
    normalize : bool
        Divide ``K`` by its sum over the taps that land on real input pixels (0 where that
        sum is 0).
    backend : {None, "cpu", "cuda"}

    Returns
    -------
    out : array, shape (N, *S, O)
        float64 if any input is float64, else float32.

    Raises
    ------
    TypeError, ValueError, MemoryError, numvox.CudaUnavailableError
        As :func:`numvox.pac_conv` (the shared input policy), and: bad dtypes or options,
        shapes that do not fit together (a guide of the wrong spatial size names both
        shapes), an empty output, NaN or infinite inputs.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> x = np.ones((1, 4, 4, 1)); f = np.zeros((1, 8, 8, 1)); w = np.ones((4, 4, 1, 1))
    >>> out = numvox.pac_conv_transpose(x, f, w, stride=2, padding=1, normalize=True)
    >>> out.shape, float(out[0, 3, 3, 0])
    ((1, 8, 8, 1), 1.0)
    """
    call = Call(backend, optional=("bias", "kernel_params"), x=x, guide=guide, weight=weight, bias=bias,
                kernel_params=kernel_params)
    geo, x5, g5, w3, b = _prepare(call, stride, padding, output_padding, dilation, kernel, normalize)
    res = call.output(None, (geo["out_shape"][0],) + geo["out3"] + (geo["O"],), geo["dtype"])
    if res.size:
        check_finite(call, (("x", x5), ("guide", g5)), (("weight", w3), ("bias", b)))
        _launch(call, geo, x5, g5, w3, b, normalize, res)
    return call.wrap(res.reshape(geo["out_shape"]))


def _launch(call, geo, x5, g5, w3, b, normalize, res):
    """The forward kernels of ``geo`` (kernel kind ``geo["kp"]``) into ``res``."""
    xv, xc, gv, gc, bias_arr = forward_operands(call, geo, x5, g5, w3, b)
    if call.backend == "cpu":
        from .._shared.blas import single_threaded_blas
        from ._transpose_cpu import transpose_forward

        with single_threaded_blas():  # the kernel calls BLAS from its threads
            transpose_forward(xv, np.int64(xc), gv, np.int64(gc), w3, bias_arr, b is not None, geo["ks"],
                              geo["st"], geo["P"], geo["hf"], geo["dl"], geo["kp"], bool(normalize), res)
    else:
        from ._point_cuda import transpose_forward_cuda

        transpose_forward_cuda(call, xv, xc, gv, gc, w3, bias_arr, b is not None, geo, bool(normalize), res)


def pac_conv_transpose_backward(grad_out, x, guide, weight, *, stride=1, padding=0, output_padding=0, dilation=1,
                                kernel="gaussian", kernel_params=None, kernel_params_grad=False, normalize=False,
                                backend=None):
    """Gradients of :func:`pac_conv_transpose` with respect to all its inputs.

    Parameters
    ----------
    grad_out : array, shape (N, *S, O)
        Gradient of the loss with respect to ``pac_conv_transpose``'s output.
    x, guide, weight, stride, padding, output_padding, dilation, kernel, kernel_params, normalize, backend
        As given to :func:`pac_conv_transpose` (the bias does not enter the gradients).
    kernel_params_grad : bool
        Also return ``grad_kernel_params`` (as :func:`numvox.pac_conv_backward`).

    Returns
    -------
    grad_x, grad_guide, grad_weight, grad_bias : arrays
        Shapes of ``x``, ``guide``, ``weight`` and ``(O,)``; float64 if any input is float64,
        else float32.
    grad_kernel_params : array, shape (2,)
        Only with ``kernel_params_grad=True``: ``[dL/dalpha, dL/dlambda]``.

    Raises
    ------
    TypeError, ValueError, MemoryError, numvox.CudaUnavailableError
        As :func:`pac_conv_transpose`, and ValueError for a ``grad_out`` whose shape is not the output's.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> x = np.ones((1, 3, 3, 1)); f = np.zeros((1, 6, 6, 1)); w = np.ones((2, 2, 1, 2))
    >>> gx, gf, gw, gb = numvox.pac_conv_transpose_backward(np.ones((1, 6, 6, 2)), x, f, w, stride=2)
    >>> gb
    array([36., 36.])
    """
    call = Call(backend, optional=("kernel_params",), grad_out=grad_out, x=x, guide=guide, weight=weight,
                kernel_params=kernel_params)
    geo, x5, g5, w3, _ = _prepare(call, stride, padding, output_padding, dilation, kernel, normalize,
                                  kernel_params_grad)
    dtype, T, C, O = geo["dtype"], geo["T"], geo["C"], geo["O"]
    go5, gx, gg = backward_arrays(call, geo, x5, g5, (("weight", w3),))
    xv, xc = kernel_view(x5)
    gv, gc = kernel_view(g5)
    gov, gu = kernel_view(go5)
    if call.backend == "cpu":
        from .._shared.blas import single_threaded_blas
        from ._cpu import thread_count
        from ._transpose_cpu import transpose_backward

        gw_part = np.zeros((thread_count(), T, C, O), dtype)
        gb_part = np.zeros((thread_count(), O), dtype)
        if go5.size:
            with single_threaded_blas():  # the kernel calls BLAS from its threads
                transpose_backward(gov, np.int64(gu), xv, np.int64(xc), gv, np.int64(gc), w3, geo["ks"], geo["st"],
                                   geo["P"], geo["hf"], geo["dl"], geo["kp"], bool(normalize), gx, gg, gw_part,
                                   gb_part)
        gw, gb = gw_part.sum(axis=0), gb_part.sum(axis=0)
    else:
        from ._point_cuda import transpose_backward_cuda

        gw = call.zeros((T, C, O), dtype)
        gb = call.zeros((O,), dtype)
        if go5.size:
            transpose_backward_cuda(call, gov, gu, xv, xc, gv, gc, w3, geo, bool(normalize), gx, gg, gw, gb)
    grads = (gx.reshape(tuple(call["x"].shape)), gg.reshape(tuple(call["guide"].shape)),
             gw.reshape(tuple(call["weight"].shape)), gb)
    if kernel_params_grad:
        grads += (kernel_param_grads(call, gov, gu, x5, w3, geo["kp"], bool(normalize),
                                     weighted_launch(call, geo, g5, _launch), 1, dtype),)
    return call.wrap(grads)
