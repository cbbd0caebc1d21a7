"""Landmark vote aggregation: ``aggregate_votes`` (probabilities + offsets -> heatmaps) and
``heatmap_peaks`` (heatmaps -> sub-voxel landmark coordinates), on CPU and CUDA."""

from ._api import aggregate_votes, heatmap_peaks

__all__ = ["aggregate_votes", "heatmap_peaks"]
