"""Landmark vote aggregation: ``aggregate_votes`` (probabilities + offsets -> heatmaps) and
``heatmap_peaks`` (heatmaps -> sub-voxel landmark coordinates), on CPU, CUDA and Dask.

What lives here:

- ``_api``: the public functions (checks and output shapes from ``_rules``, then the backend);
- ``_rules``: option values, input checks and output-shape rules, written once (also ``OPS``);
- ``_splat``: where a vote lands (nearest voxel, trilinear cell), for every kernel;
- ``_peak``: what a heatmap's peak reports once its arg-max is known (centroid, +inf,
  overflow, empty heatmaps), for the CPU and CUDA kernels;
- ``_cpu``: the Numba CPU kernels (in-memory and Dask-block) and their host drivers;
- ``_cuda``: the CUDA kernels (imported only for CUDA calls);
- ``_dask``: the Dask driver ``aggregate_votes_dask`` (re-exported by :mod:`numvox.dask`);
- ``cli``: the ``numvox votes`` command.

Imports: only :mod:`numvox._shared` and this package's own modules (never another family,
nor :mod:`numvox.dask`, :mod:`numvox.tf`, :mod:`numvox.keras`).
"""

from .._shared.ops import OpSpec
from ._api import aggregate_votes, heatmap_peaks
from ._dask import aggregate_votes_dask
from ._rules import peaks_output_specs, votes_output_specs

OPS = (
    OpSpec("aggregate_votes", aggregate_votes, ("probs", "offsets"), votes_output_specs),
    OpSpec("heatmap_peaks", heatmap_peaks, ("heatmaps",), peaks_output_specs),
)

__all__ = ["aggregate_votes", "heatmap_peaks", "aggregate_votes_dask", "OPS"]
