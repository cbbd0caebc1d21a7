"""The adaptive kernel of one tap, written once for the CPU (``njit``) and CUDA (device
function) kernels of every PAC operator.

A tap compares the guide features ``f_q`` at the tap with ``f_c`` at the window centre
through ``Delta = f_q - f_c``:

- ``gaussian``: ``K = exp(-s / 2)`` with ``s = sum(Delta**2)``;
- ``inv_{alpha}_{lambda}``: ``K = alpha + (s + 1e-4) ** (lambda / 2)``, and with ``_asym``
  ``s = sum(relu(Delta)**2)`` (pacnet's ``packernel2d``).

``kp`` is the float64 array ``[kind, alpha, lambda, asym]`` of :func:`numvox.pac._rules.kernel_params`
(``kind`` 0: Gaussian, 1: inverse).  The functions are plain Python here; ``_cpu`` and
``_cuda`` compile them for their targets.
"""

import math

EPS = 1e-4  # pacnet's epsilon of the inverse kernels


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
    return kp[1] + math.pow(s + EPS, 0.5 * kp[2])


def tap_slope(s, k, kp):
    """``2 dK/ds`` of a tap (``s`` its summed squared difference, ``k`` its value ``K``):
    ``dK/df_q = slope * tap_delta`` per feature and ``dK/df_c`` the opposite."""
    if kp[0] == 0.0:
        return -k
    return kp[2] * math.pow(s + EPS, 0.5 * kp[2] - 1.0)
