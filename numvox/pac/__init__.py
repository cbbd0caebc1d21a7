"""Pixel-adaptive convolution (PAC): fused forward and backward, 2-D and 3-D, CPU and CUDA.

Public: :func:`pac_conv`, :func:`pac_conv_backward`, :func:`output_shape` (the result shape
of ``pac_conv``, ``None`` where unknown) and ``OPS`` (the operations as the framework
wrappers see them, :class:`numvox._shared.ops.OpSpec`).

Modules: ``_rules`` (options, input checks, window geometry, output shapes: written once),
``_api`` (the public functions and their CPU/CUDA dispatch), ``_cpu`` (Numba CPU kernels),
``_cuda`` (Numba CUDA kernels, imported only for CUDA calls), ``cli`` (``numvox pac``).
The family imports only :mod:`numvox._shared` and its own modules (``cli`` also the
command-line helpers of :mod:`numvox.cli`); no other family, nor ``numvox.dask``,
``numvox.tf`` or ``numvox.keras``.  PAC has no Dask driver.
"""

from ._api import OPS, output_shape, pac_conv, pac_conv_backward

__all__ = ["OPS", "output_shape", "pac_conv", "pac_conv_backward"]
