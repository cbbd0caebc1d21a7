"""Pure-TensorFlow vote aggregation (the best a TF user would write) and realistic model outputs.

``tf_aggregate_votes`` follows seed 000's vectorised filter (``tf.where`` on the thresholded
probabilities, ``tf.gather_nd`` of the weights and of the three offsets of every vote), then
rounds the targets, drops those outside the volume (or non-finite) with ``tf.boolean_mask``,
and accumulates with ``tf.tensor_scatter_nd_add``: the same semantics as
``numvox.aggregate_votes(..., splat="nearest")``.  It runs as a ``tf.function`` (graph mode;
XLA cannot compile it: ``tf.where`` has a data-dependent output shape).
"""

import numpy as np
import tensorflow as tf


@tf.function(reduce_retracing=True)
def tf_aggregate_votes(probs, offsets, threshold):
    shape = tf.shape(probs)
    n_lm = shape[-1] - 1
    p = probs[..., 1:]
    idx = tf.where(p >= tf.cast(threshold, p.dtype))  # (n, 4): x, y, z, landmark
    weights = tf.cast(tf.gather_nd(p, idx), tf.float32)
    base, lm = idx[:, :3], idx[:, 3:]
    n_lm64 = tf.cast(n_lm, tf.int64)
    off = tf.stack([tf.gather_nd(offsets, tf.concat([base, lm + a * n_lm64], axis=1)) for a in range(3)], axis=1)
    target = tf.floor(tf.cast(base, tf.float32) + tf.cast(off, tf.float32) + 0.5)
    size = tf.cast(shape[:3], tf.float32)
    keep = tf.reduce_all((target >= 0) & (target < size), axis=1)  # NaN compares False: dropped
    target = tf.cast(tf.boolean_mask(target, keep), tf.int64)
    where = tf.concat([tf.boolean_mask(lm, keep), target], axis=1)
    heat = tf.zeros(tf.stack([n_lm, shape[0], shape[1], shape[2]]), tf.float32)
    return tf.tensor_scatter_nd_add(heat, where, tf.boolean_mask(weights, keep))


def realistic_outputs(n, n_lm=3, seed=0, dtype=np.float32):
    """Model-like outputs for an ``n³`` volume: probs ``(n, n, n, L+1)``, offsets ``(n, n, n, 3L)``.

    Each landmark's probability is ``0.97·exp(-(d/R)⁴)`` with ``R = 0.2 n`` (about 3 % of the
    voxels vote for each landmark at threshold 0.5, ~10 % in all), plus ±0.03 noise;
    offsets point at the landmark with 1 voxel of Gaussian noise (axis-major).  Built in
    slabs to bound memory.
    """
    rng = np.random.default_rng(seed)
    lms = rng.uniform(0.3 * n, 0.7 * n, size=(n_lm, 3))
    probs = np.empty((n, n, n, n_lm + 1), dtype)
    offsets = np.empty((n, n, n, 3 * n_lm), dtype)
    yz = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).astype(np.float32)
    radius = 0.2 * n
    for x in range(n):
        pl = np.empty((n, n, n_lm), np.float32)
        for lm in range(n_lm):
            d = np.empty((n, n, 3), np.float32)
            d[..., 0] = lms[lm, 0] - x
            d[..., 1:] = lms[lm, 1:] - yz
            dist = np.sqrt((d**2).sum(-1))
            pl[..., lm] = 0.97 * np.exp(-((dist / radius) ** 4))
            noise = rng.normal(scale=1.0, size=(n, n, 3)).astype(np.float32)
            for a in range(3):
                offsets[x, :, :, a * n_lm + lm] = d[..., a] + noise[..., a]
        pl = np.clip(pl + rng.uniform(-0.03, 0.03, size=pl.shape).astype(np.float32), 0, 1)
        tot = pl.sum(-1, keepdims=True)
        pl = np.where(tot > 1, pl / np.maximum(tot, 1e-6), pl)
        probs[x, :, :, 1:] = pl
        probs[x, :, :, 0] = 1 - pl.sum(-1)
    return probs, offsets, lms
