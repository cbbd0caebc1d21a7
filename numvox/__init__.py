"""numvox: Numba-accelerated kernels for dense volumetric image operations.

Public functions (each takes NumPy, CuPy / ``__cuda_array_interface__`` and TensorFlow
arrays, and a ``backend=None|"cpu"|"cuda"`` keyword):

- :func:`aggregate_votes`, :func:`heatmap_peaks` -- landmark vote aggregation
- :func:`descent_labels`, :func:`descent_basins` -- 3x3x3 steepest-descent labelling
- :func:`correlate_batch` -- batched N-D cross-correlation of N images with K filters
- :func:`pac_conv`, :func:`pac_conv_backward` -- pixel-adaptive convolution
- :func:`pac_pool`, :func:`pac_pool_backward` -- pixel-adaptive pooling
- :func:`pac_conv_transpose`, :func:`pac_conv_transpose_backward` -- transposed PAC
  (guided upsampling)

Operation sub-packages are imported on first use, so ``import numvox`` stays cheap and
needs only NumPy, SciPy and Numba.
"""

import importlib as _importlib

from ._shared.backend import CudaUnavailableError
from ._shared.info import info

__version__ = "0.1.0"

# public name -> sub-package that defines it (imported lazily, PEP 562)
_LAZY = {
    "aggregate_votes": "numvox.votes",
    "heatmap_peaks": "numvox.votes",
    "descent_labels": "numvox.labels",
    "descent_basins": "numvox.labels",
    "correlate_batch": "numvox.correlate",
    "pac_conv": "numvox.pac",
    "pac_conv_backward": "numvox.pac",
    "pac_pool": "numvox.pac",
    "pac_pool_backward": "numvox.pac",
    "pac_conv_transpose": "numvox.pac",
    "pac_conv_transpose_backward": "numvox.pac",
}
_SUBMODULES = ("votes", "labels", "correlate", "pac", "tf", "keras", "demo", "dask")

__all__ = ["info", "CudaUnavailableError", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return _importlib.import_module(f"numvox.{name}")
    raise AttributeError(f"module 'numvox' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
