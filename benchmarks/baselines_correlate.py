"""Baselines for the batched cross-correlation benchmarks.

``seed_cdist_max`` is the code of seed 004 (a StackOverflow question): ``scipy.spatial.distance
.cdist`` calling ``max(scipy.signal.correlate(u, v, mode="same", method="fft"))`` per pair on
flattened items; only the item shape is a parameter here instead of the hard-coded (96, 96, 3).
"""

import numpy as np


def seed_cdist_max(batch_images, my_filters):
    """The seed's code, verbatim up to the item shape."""
    from scipy.signal import correlate
    from scipy.spatial.distance import cdist

    shape = batch_images.shape[1:]

    def xcorr(u, v):
        """unfortunately, cdist only takes 2D arrays, so need to do this"""
        u = np.reshape(u, shape)
        v = np.reshape(v, shape)
        return np.max(correlate(u, v, mode="same", method="fft"))

    batch_vec = np.reshape(batch_images, [-1, np.prod(batch_images.shape[1:])])
    filt_vec = np.reshape(my_filters, [-1, np.prod(my_filters.shape[1:])])
    return cdist(batch_vec, filt_vec, xcorr)


def per_pair_scipy(images, filters, mode="same"):
    """A per-pair ``scipy.signal.correlate`` loop (method chosen by SciPy), channels summed
    (``channel_axis=-1`` semantics)."""
    from scipy.signal import correlate

    N, K = images.shape[0], filters.shape[0]
    out = None
    for n in range(N):
        for k in range(K):
            r = sum(correlate(images[n, ..., c], filters[k, ..., c], mode=mode) for c in range(images.shape[-1]))
            if out is None:
                out = np.empty((N, K, *r.shape), dtype=r.dtype)
            out[n, k] = r
    return out


def tf_conv3d_fn(volumes, filters):
    """A callable running ``tf.nn.conv3d`` (cross-correlation, "SAME" padding) on the same work:
    volumes ``(N, D, H, W, C)``, filters ``(K, d, h, w, C)``; TensorFlow is imported here only."""
    import tensorflow as tf

    x = tf.constant(volumes)
    w = tf.constant(np.ascontiguousarray(np.moveaxis(filters, 0, -1)))  # (d, h, w, C, K)

    def run():
        return tf.nn.conv3d(x, w, strides=[1, 1, 1, 1, 1], padding="SAME").numpy()

    return run
