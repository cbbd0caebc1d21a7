"""Steepest-descent 3x3x3 labelling and descent basins (issue 4).

Public: :func:`descent_labels`, :func:`descent_basins`.

For chunked (Dask) drivers, in :mod:`numvox.labels._api` (CPU, NumPy in and out):

- ``labels_block_cpu(block, faces, border)``: labels of a chunk given its one-voxel halo on
  the faces that are not true volume faces (``faces[a] = (low_is_true, high_is_true)``);
  identical to the full-volume labels for both ``border`` modes.
- ``block_basins_cpu(labels, origin, volume_shape)``: chunk-local components of the
  voxel -> target graph plus the edges that leave the chunk (local id -> global flat index),
  to be merged across chunks and renumbered by first voxel in C order.
- ``basins_from_labels_cpu(labels)``: labels -> basins for a whole volume.
"""

from ._api import descent_basins, descent_labels

__all__ = ["descent_labels", "descent_basins"]
