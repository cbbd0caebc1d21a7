"""Batched N-D cross-correlation of N images with K filters (:func:`correlate_batch`)."""

from ._api import correlate_batch

__all__ = ["correlate_batch"]
