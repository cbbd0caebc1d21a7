"""Steepest-descent 3x3x3 labelling and descent basins (issue 4).

Public: :func:`descent_labels`, :func:`descent_basins`.  For chunked drivers:
:func:`numvox.labels._api.labels_block_cpu` (labels of a block given its halo and which of
its faces are true volume faces) and the basin pieces in :mod:`numvox.labels._api`.
"""

from ._api import descent_basins, descent_labels

__all__ = ["descent_labels", "descent_basins"]
