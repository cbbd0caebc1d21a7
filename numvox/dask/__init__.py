"""Scale-out of numvox's operations on Dask (issue 8).

The functions take ``dask.array.Array`` inputs (NumPy or CuPy chunks, e.g. from
``dask.array.from_zarr``), have the keyword arguments of the in-memory functions, and return
lazy Dask arrays with exactly the values of the in-memory call on the same data, whatever the
chunking:

- :func:`descent_labels`: chunks with a one-voxel halo, true volume faces handled as faces;
- :func:`descent_basins`: chunk-local basins merged through boundary equivalences and a
  union-find step, numbered ``1..M`` as in memory;
- :func:`aggregate_votes`: votes scattered with global coordinates, per-chunk partial
  heatmaps combined in a bounded-memory tree (or, with a ``max_offset`` hint, a halo plan);
- :func:`correlate_batch`: blocks of images x blocks of filters.

They run on any Dask scheduler, ``distributed`` clusters included.  Dask is imported only by
this sub-package.  CLI support: :mod:`numvox.dask.cli`.
"""

from ._correlate import correlate_batch
from ._labels import descent_basins, descent_labels
from ._votes import aggregate_votes

__all__ = ["descent_labels", "descent_basins", "aggregate_votes", "correlate_batch"]
