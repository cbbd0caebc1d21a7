"""Pixel-adaptive convolution (PAC) and its family (pacnet's ``pac.py``): fused forward and
backward, 2-D and 3-D, CPU and CUDA, every kernel kind (Gaussian, inverse; the inverse
kernel's alpha and lambda may come from ``kernel_params=`` and have gradients,
``kernel_params_grad=True``).

Public: :func:`pac_conv`, :func:`pac_conv_backward`, :func:`pac_conv_transpose`,
:func:`pac_conv_transpose_backward`, :func:`pac_pool`, :func:`pac_pool_backward`,
:func:`output_shape` (the result shape of ``pac_conv``, ``None`` where unknown),
:func:`transpose_output_shape`, :func:`pool_output_shape`, :func:`parse_kernel` (a kernel
name's kind, alpha, lambda and flags) and ``OPS`` (the operations as the framework wrappers see them,
:class:`numvox._shared.ops.OpSpec`).

Modules: ``_rules`` (options, kernel names, input checks, window geometry, output shapes:
written once), ``_kinds`` (the per-tap kernel of every kind, compiled by both targets),
``_api`` (``pac_conv``: the public functions and their CPU/CUDA dispatch), ``_params``
(gradients with respect to an inverse kernel's alpha and lambda, from forward passes), ``_pool``
(``pac_pool``), ``_transpose`` (``pac_conv_transpose``), ``_cpu``, ``_taps_cpu``,
``_pool_cpu``, ``_transpose_cpu`` (Numba CPU kernels), ``_cuda``, ``_pool_cuda``,
``_transpose_cuda`` (Numba CUDA kernels, imported only for CUDA calls), ``cli``
(``numvox pac``).
The family imports only :mod:`numvox._shared` and its own modules (``cli`` also the
command-line helpers of :mod:`numvox.cli`); no other family, nor ``numvox.dask``,
``numvox.tf`` or ``numvox.keras``.  PAC has no Dask driver.
"""

from .._shared.ops import OpSpec
from ._api import PAC_OPS, output_shape, pac_conv, pac_conv_backward
from ._pool import pac_pool, pac_pool_backward
from ._rules import (
    pac_backward_output_specs,
    parse_kernel,
    pool_backward_output_specs,
    pool_output_shape,
    pool_output_specs,
    transpose_output_shape,
    transpose_output_specs,
)
from ._transpose import pac_conv_transpose, pac_conv_transpose_backward

OPS = PAC_OPS + (
    OpSpec("pac_pool", pac_pool, ("x", "guide", "kernel_params"), pool_output_specs),
    OpSpec("pac_pool_backward", pac_pool_backward, ("grad_out", "x", "guide", "kernel_params"),
           pool_backward_output_specs),
    OpSpec("pac_conv_transpose", pac_conv_transpose, ("x", "guide", "weight", "bias", "kernel_params"),
           transpose_output_specs),
    OpSpec("pac_conv_transpose_backward", pac_conv_transpose_backward,
           ("grad_out", "x", "guide", "weight", "kernel_params"), pac_backward_output_specs),
)

__all__ = ["OPS", "output_shape", "pac_conv", "pac_conv_backward", "pac_conv_transpose",
           "pac_conv_transpose_backward", "pac_pool", "pac_pool_backward", "parse_kernel", "pool_output_shape",
           "transpose_output_shape"]
