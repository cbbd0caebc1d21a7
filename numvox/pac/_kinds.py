"""The adaptive kernel of one tap, written once for the CPU (``njit``) and CUDA (device
function) kernels of every PAC operator.

A tap compares the guide features ``f_q`` at the tap with ``f_c`` at the window centre
through ``Delta = f_q - f_c``:

- ``gaussian``: ``K = exp(-s / 2)`` with ``s = sum(Delta**2)``;
- ``inv_{alpha}_{lambda}``: ``K = alpha + (s + 1e-4) ** (lambda / 2)``, and with ``_asym``
  ``s = sum(relu(Delta)**2)`` (pacnet's ``packernel2d``).

``kp`` is the float64 array ``[kind, alpha, lambda, asym]`` of :func:`numvox.pac._rules.kernel_params`
(``kind`` 0: Gaussian, 1: inverse, 2: ``dK/dlambda`` of the inverse kernel,
``0.5 * ln(s + 1e-4) * (s + 1e-4) ** (lambda / 2)``).  Kind 2 is internal: the gradients
with respect to alpha and lambda (:mod:`numvox.pac._params`) run the forward kernels with
it (:func:`derivative_kinds`); the backward kernels never see it, so :func:`tap_slope` has
no case for it.  The functions are plain Python here; ``_cpu`` and ``_cuda`` compile them
for their targets.
"""

import math

import numpy as np

EPS = 1e-4  # pacnet's epsilon of the inverse kernels
GAUSSIAN, INVERSE, INVERSE_DLAMBDA = 0.0, 1.0, 2.0  # kp[0]


def tap_delta(fq, fc, kp):
    """The difference a tap's distance squares: ``f_q - f_c``, rectified for ``_asym``."""
    d = fq - fc
    if kp[3] != 0.0 and d < 0.0:
        return 0.0 * d
    return d


def tap_value(s, kp):
    """``K`` of a tap whose summed squared difference is ``s``."""
    if kp[0] == 0.0:
        return math.exp(-0.5 * s)
    p = math.pow(s + EPS, 0.5 * kp[2])
    if kp[0] == 2.0:
        return 0.5 * math.log(s + EPS) * p
    return kp[1] + p


def tap_slope(s, k, kp):
    """``2 dK/ds`` of a tap (``s`` its summed squared difference, ``k`` its value ``K``):
    ``dK/df_q = slope * tap_delta`` per feature and ``dK/df_c`` the opposite (kinds 0, 1)."""
    if kp[0] == 0.0:
        return -k
    return kp[2] * math.pow(s + EPS, 0.5 * kp[2] - 1.0)


def derivative_kinds(kp):
    """The ``kp`` arrays of ``dK/dalpha`` and ``dK/dlambda`` of the inverse kernel ``kp``:
    ``dK/dalpha = 1`` is the inverse kernel with alpha 0 and lambda 0 (``(s + eps)**0``),
    ``dK/dlambda`` is kind 2 with ``kp``'s lambda.  ``_asym`` is kept for both."""
    return (np.array([INVERSE, 0.0, 0.0, kp[3]], np.float64),
            np.array([INVERSE_DLAMBDA, kp[1], kp[2], kp[3]], np.float64))
