"""Steepest-descent 3x3x3 labels and descent basins of 3-D volumes, on CPU, CUDA and Dask.

Public: :func:`descent_labels`, :func:`descent_basins`; their Dask drivers
:func:`descent_labels_dask`, :func:`descent_basins_dask` (re-exported by :mod:`numvox.dask` as
``descent_labels`` / ``descent_basins``); ``OPS``, the operations as the TensorFlow wrappers
see them (:class:`numvox._shared.ops.OpSpec`).

Modules: ``_api`` (the public functions, ``OPS``), ``_rules`` (constants, checks, compute
dtype, output shapes), ``_inmemory`` (one array through the CPU or CUDA kernels), ``_cpu``
(Numba kernels and their host drivers: labels of a haloed block, union-find basins, the
chunk merge), ``_cuda`` (CUDA kernels, imported only for CUDA calls), ``_dask`` (the Dask
drivers; Dask is imported only when one runs), ``cli`` (``numvox labels``).

Imports: only :mod:`numvox._shared` and this package's own modules (``cli`` also uses the
command-line helpers of :mod:`numvox.cli` and :mod:`numvox.dask.cli`).
"""

from ._api import OPS, descent_basins, descent_labels
from ._dask import descent_basins_dask, descent_labels_dask

__all__ = ["descent_labels", "descent_basins", "descent_labels_dask", "descent_basins_dask", "OPS"]
