"""PAC pooling (pacnet's ``pacpool2d``): the public functions and their dispatch to the CPU
(:mod:`._pool_cpu`) and CUDA (:mod:`._pool_cuda`) kernels."""

import numpy as np

from .._shared.arrays import Call
from .._shared.halfprec import kernel_view
from .._shared.validate import as_int_tuple
from ._api import backward_arrays, check_finite, embed, host_params, window_geometry
from ._params import kernel_param_grads
from ._rules import check_options, check_pool_inputs, geometry, pool_output_shape, result_dtype

__all__ = ["pac_pool", "pac_pool_backward"]


def _prepare(call, kernel_size, stride, padding, dilation, kernel, normalize, channel_wise, params_grad=False):
    x, guide = call["x"], call["guide"]
    grad_out = call["grad_out"] if "grad_out" in call.arrays else None
    kp = check_options(kernel, normalize, host_params(call), params_grad)
    d = check_pool_inputs(x, guide, channel_wise, grad_out)
    ksize = as_int_tuple(kernel_size, d, "kernel_size", minimum=1)
    out_shape = pool_output_shape(x.shape, ksize, stride, padding, dilation)
    stride, lo, dilation, _ = geometry(tuple(x.shape[1:-1]), ksize, stride, padding, dilation)
    dtype = result_dtype(*(a.dtype for a in (x, guide, grad_out) if a is not None))
    geo = window_geometry(d, ksize, stride, lo, dilation, out_shape, kp, dtype)
    return geo, embed(x, d), embed(guide, d)


def pac_pool(x, guide, kernel_size, *, stride=1, padding=0, dilation=1, kernel="gaussian", kernel_params=None,
             normalize=False, channel_wise=False, backend=None):
    """Pixel-adaptive pooling (pacnet's ``pacpool2d``), 2-D or 3-D, channels-last.

    ``out[n, i, c] = sum_t K_t(n, i) * x[n, q_t, c]``

    with the windows of :func:`numvox.pac_conv` (tap ``t`` of output position ``i`` reads
    ``q_t = i*stride - pad + t*dilation``) and its adaptive kernel ``K`` comparing the guide
    at ``q_t`` with the guide at the window centre.  No weights: a guided, edge-aware
    average (with ``normalize``) or sum.

    Parameters
    ----------
    x : array, shape (N, H, W, C) or (N, D, H, W, C)
        Input; zero outside the image.  float16, bfloat16, float32 or float64.
    guide : array, shape (N, H, W, F) or (N, D, H, W, F)
        Guide features (same batch and spatial size as ``x``).
    kernel_size : int or sequence of ints
        Window size per spatial axis.
    stride, dilation : int or sequence of ints
    padding : int or sequence of ints or {"same", "valid"}
        As :func:`numvox.pac_conv` (pacnet's default: 0).
    kernel : str
        ``"gaussian"`` (``exp(-sum(Delta**2)/2)``) or ``"inv_{alpha}_{lambda}"``
        (``alpha + (sum(Delta**2) + 1e-4)**(lambda/2)``), optionally with ``"_asym"``
        (``Delta`` rectified) and ``"_fixed"`` (alpha and lambda not trained by the Keras
        layers); ``Delta = f_q - f_centre``.
    kernel_params : array of 2, optional
        ``[alpha, lambda]`` of an inverse kernel, overriding its name's values (as
        :func:`numvox.pac_conv`).
    normalize : bool
        Divide ``K`` by its sum over the window's in-image taps (0 where that sum is 0).
    channel_wise : bool
        Channel ``c``'s kernel from guide feature ``c`` alone (needs ``F == C``).
    backend : {None, "cpu", "cuda"}

    Returns
    -------
    out : array, shape (N, *S_out, C)
        ``S_out`` as :func:`numvox.pac_conv`; float64 if ``x`` or ``guide`` is float64, else
        float32.

    Raises
    ------
    TypeError, ValueError, MemoryError, numvox.CudaUnavailableError
        As :func:`numvox.pac_conv` (the shared input policy), and: bad dtypes, shapes
        (``guide`` not of ``x``'s spatial size, ``channel_wise`` with ``F != C``), options,
        NaN or infinite inputs.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> x = np.ones((1, 6, 6, 2)); f = np.zeros((1, 6, 6, 1))
    >>> numvox.pac_pool(x, f, 3, stride=2, padding=1, normalize=True)[0, 1, 1]
    array([1., 1.])
    """
    call = Call(backend, optional=("kernel_params",), x=x, guide=guide, kernel_params=kernel_params)
    geo, x5, g5 = _prepare(call, kernel_size, stride, padding, dilation, kernel, normalize, channel_wise)
    res = call.output(None, (geo["out_shape"][0],) + geo["out3"] + (geo["out_shape"][-1],), geo["dtype"])
    if res.size:
        check_finite(call, (("x", x5), ("guide", g5)))
        _launch(call, geo, geo["kp"], x5, g5, normalize, channel_wise, res)
    return call.wrap(res.reshape(geo["out_shape"]))


def _launch(call, geo, kp, x5, g5, normalize, channel_wise, res):
    """The forward kernels of kernel kind ``kp`` into ``res``."""
    xv, xc = kernel_view(x5)
    gv, gc = kernel_view(g5)
    if call.backend == "cpu":
        from ._pool_cpu import pool_forward

        pool_forward(xv, np.int64(xc), gv, np.int64(gc), geo["ks"], geo["st"], geo["lo"], geo["dl"], kp,
                     bool(normalize), bool(channel_wise), res)
    else:
        from ._point_cuda import pool_forward_cuda

        pool_forward_cuda(call, xv, xc, gv, gc, {**geo, "kp": kp}, bool(normalize), bool(channel_wise), res)


def pac_pool_backward(grad_out, x, guide, kernel_size, *, stride=1, padding=0, dilation=1, kernel="gaussian",
                      kernel_params=None, kernel_params_grad=False, normalize=False, channel_wise=False,
                      backend=None):
    """Gradients of :func:`pac_pool` with respect to ``x`` and ``guide``.

    Parameters
    ----------
    grad_out : array, shape (N, *S_out, C)
        Gradient of the loss with respect to ``pac_pool``'s output.
    x, guide, kernel_size, stride, padding, dilation, kernel, kernel_params, normalize, channel_wise, backend
        As given to :func:`pac_pool`.
    kernel_params_grad : bool
        Also return ``grad_kernel_params`` (as :func:`numvox.pac_conv_backward`).

    Returns
    -------
    grad_x, grad_guide : arrays
        Shapes of ``x`` and ``guide``; float64 if any input is float64, else float32.
    grad_kernel_params : array, shape (2,)
        Only with ``kernel_params_grad=True``: ``[dL/dalpha, dL/dlambda]``.

    Raises
    ------
    TypeError, ValueError, MemoryError, numvox.CudaUnavailableError
        As :func:`pac_pool`, and ValueError for a ``grad_out`` whose shape is not the output's.

    Examples
    --------
    >>> import numpy as np, numvox
    >>> x = np.ones((1, 4, 4, 1)); f = np.zeros((1, 4, 4, 1))
    >>> gx, gf = numvox.pac_pool_backward(np.ones((1, 4, 4, 1)), x, f, 3, padding=1)
    >>> gx[0, 1, 1, 0], float(abs(gf).max())
    (np.float64(9.0), 0.0)
    """
    call = Call(backend, optional=("kernel_params",), grad_out=grad_out, x=x, guide=guide, kernel_params=kernel_params)
    geo, x5, g5 = _prepare(call, kernel_size, stride, padding, dilation, kernel, normalize, channel_wise,
                           kernel_params_grad)
    go5, gx, gg = backward_arrays(call, geo, x5, g5)
    xv, xc = kernel_view(x5)
    gv, gc = kernel_view(g5)
    gov, gu = kernel_view(go5)
    if go5.size:
        if call.backend == "cpu":
            from ._pool_cpu import pool_backward

            pool_backward(gov, np.int64(gu), xv, np.int64(xc), gv, np.int64(gc), geo["ks"], geo["st"], geo["lo"],
                          geo["dl"], geo["kp"], bool(normalize), bool(channel_wise), gx, gg)
        else:
            from ._point_cuda import pool_backward_cuda

            pool_backward_cuda(call, gov, gu, xv, xc, gv, gc, geo, bool(normalize), bool(channel_wise), gx, gg)
    grads = (gx.reshape(tuple(call["x"].shape)), gg.reshape(tuple(call["guide"].shape)))
    if kernel_params_grad:
        def launch(kp, xs, _, norm, out):
            _launch(call, geo, kp, xs, g5, norm, channel_wise, out)

        grads += (kernel_param_grads(call, gov, gu, x5, None, geo["kp"], bool(normalize), launch,
                                     int(x5.shape[-1]) if channel_wise else 1, geo["dtype"]),)
    return call.wrap(grads)
