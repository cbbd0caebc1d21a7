"""Batched N-D cross-correlation of N images with K filters (:func:`correlate_batch`).

Layout: ``_api`` (the public function: Dask inputs to ``_dask``, others to ``_inmemory``),
``_inmemory`` (conversion, checks, result buffers, and the choice between the FFT path
``_fft``, the CPU direct driver ``_direct`` over the Numba kernels of ``_cpu``, and the CUDA
driver and kernels of ``_cuda``), ``_dask`` (the Dask driver: the in-memory path per block),
``_rules`` (options, geometry, output shapes and dtypes, method choice: written once and
imported by all the others), ``_normalize`` (window statistics of ``normalize=True``),
``_progress`` and ``cli``.

This package imports only :mod:`numvox._shared` and its own modules (never another family,
nor :mod:`numvox.dask`, :mod:`numvox.tf` or :mod:`numvox.keras`).
"""

from numvox._shared.ops import OpSpec

from ._api import correlate_batch
from ._dask import correlate_batch_dask
from ._rules import output_specs

OPS = (OpSpec("correlate_batch", correlate_batch, ("images", "filters"), output_specs),)

__all__ = ["OPS", "correlate_batch", "correlate_batch_dask"]
