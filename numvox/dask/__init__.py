"""numvox's operations on Dask arrays: a namespace over the families' Dask drivers.

Each family owns its driver (``numvox/<family>/_dask.py``, built from the same block kernels as
its in-memory path); this package only gathers them under the operations' plain names, and
holds the generic Dask command-line helpers (:mod:`numvox.dask.cli`).  The in-memory public
functions (``numvox.descent_labels`` ...) hand Dask inputs to the same drivers.

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

They run on any Dask scheduler, ``distributed`` clusters included.  Dask itself is imported
only when a driver runs.  May import: the family packages' public names, ``numvox._shared``.
"""

from numvox.correlate import correlate_batch_dask as correlate_batch
from numvox.labels import descent_basins_dask as descent_basins
from numvox.labels import descent_labels_dask as descent_labels
from numvox.votes import aggregate_votes_dask as aggregate_votes

__all__ = ["descent_labels", "descent_basins", "aggregate_votes", "correlate_batch"]
