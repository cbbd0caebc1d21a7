"""Gradients of the PAC operators with respect to the inverse kernel's alpha and lambda
(``kernel_params_grad=True`` of the ``*_backward`` functions), from forward passes.

Every operator is linear in the adaptive kernel ``K``.  Without ``normalize``,
``out = b + A(K)`` with ``A(K) = sum_t K_t v_t`` (``v_t``: tap ``t``'s weighted input), so
``d out / d theta = A(K')`` with ``K' = dK/dtheta``.  With ``normalize``,
``out = b + A(K) / B(K)`` where ``B(K) = sum_t K_t`` over the valid taps is ``A`` run on an
all-ones input with unit weight, so ``d out / d theta = (A(K') - (out - b) B(K')) / B(K)``
(0 where ``B(K) = 0``, where the forward pass gives ``b``).  ``dK/dalpha = 1`` and
``dK/dlambda = 0.5 ln(s + eps) (s + eps)**(lambda/2)`` are kernel kinds of :mod:`._kinds`
(:func:`._kinds.derivative_kinds`), which every forward kernel (CPU and CUDA) computes on
its general path, with the valid-tap mask of its operator; the backward kernels are not
involved.  ``dL/dtheta = <grad_out, d out / d theta>``, summed in float64 on the host.

Cost: two forward passes of the operator without ``normalize``; with it, three, and three
passes on one channel (``C`` for channel-wise pooling).
"""

import numpy as np

from .._shared.arrays import bfloat16_dtype
from .._shared.halfprec import BFLOAT16, FLOAT16
from ._kinds import derivative_kinds


def _host64(call, a, code=0):
    """A kernel array (or kernel view with half-precision ``code``) as float64 on the host."""
    if call.device_arrays:  # pragma: no cover - needs a GPU
        a = a.copy_to_host()
    if code == FLOAT16:
        a = a.view(np.float16)
    elif code == BFLOAT16:
        a = a.view(bfloat16_dtype())
    return np.asarray(a, np.float64)


def _ones(call, shape, dtype):
    if call.device_arrays:  # pragma: no cover - needs a GPU
        from numba import cuda

        return cuda.to_device(np.ones(shape, dtype))
    return np.ones(shape, dtype)


def kernel_param_grads(call, go, go_code, x, w, kp, normalize, launch, unit_channels, dtype):
    """``[dL/dalpha, dL/dlambda]`` (an array of 2 of ``dtype``) of one operator call.

    Parameters
    ----------
    call : numvox._shared.arrays.Call
    go, go_code : array, int
        The embedded ``grad_out`` ``(N, D, H, W, O)`` as a kernel view and its code.
    x, w : arrays
        The embedded input and the ``(T, C, O)`` weight (``None`` for pooling).
    kp : float64 array of 4
        The inverse kernel (:mod:`._kinds`).
    normalize : bool
    launch : callable
        ``launch(kp, x, w, normalize, out)`` runs the operator's forward kernels with kernel
        kind ``kp`` on input ``x`` and weight ``w`` (``None`` for pooling), without bias,
        into ``out`` (``(N, D, H, W, channels)`` of ``dtype`` on the backend).
    unit_channels : int
        Channels of the all-ones input of ``B`` (1, or ``C`` for channel-wise pooling).
    dtype : numpy dtype
        The compute dtype.
    """
    grads = np.zeros(2, np.float64)
    if go.size == 0:
        return grads.astype(dtype)
    head = tuple(go.shape[:-1])

    def run(k, xs, ws, norm, channels):
        out = call.empty(head + (channels,), dtype)
        launch(k, xs, ws, norm, out)
        return _host64(call, out)

    g = _host64(call, go, go_code)
    if normalize:
        ones_x = _ones(call, tuple(x.shape[:-1]) + (unit_channels,), dtype)
        ones_w = None if w is None else _ones(call, (w.shape[0], 1, 1), dtype)
        out_n = run(kp, x, w, True, go.shape[-1])
        norm = run(kp, ones_x, ones_w, False, unit_channels)
        inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm != 0.0)
    for i, dk in enumerate(derivative_kinds(kp)):
        d = run(dk, x, w, False, go.shape[-1])
        if normalize:
            d = (d - out_n * run(dk, ones_x, ones_w, False, unit_channels)) * inv
        grads[i] = np.sum(g * d)
    return grads.astype(dtype)
