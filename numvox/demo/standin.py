"""A synthetic stand-in for the landmark model's outputs, used when TensorFlow is missing.

Without TensorFlow ``numvox demo`` cannot run the bundled U-Net, but the rest of the path
(vote aggregation, peak finding, the report and the PNG) is the same.  The stand-in plays
the part of a reasonably trained model: from the phantom's *true* landmarks it makes

- ``probs`` ``(X, Y, Z, L+1)``: each landmark's class probability falls off smoothly with the
  distance ``d`` to the landmark, ``0.97 · exp(-(d / (1.2 r))⁴)``, plus ±0.05 noise;
  background takes the rest (so voxels within roughly ``r`` vote, as with the model);
- ``offsets`` ``(X, Y, Z, 3L)`` axis-major: the exact vector to the landmark plus Gaussian
  noise of 0.6 voxel per axis, and a 5 % fraction of "confused" voxels whose offsets are
  off by up to ±4 voxels;

both in ``dtype`` (float16 by default, as a ``mixed_float16`` model's heads would emit them;
``numvox demo`` asks for float32, the bundled model's heads).  Its accuracy says nothing about
the model's; it is deterministic given the seed.
"""

import numpy as np


def standin_outputs(landmarks, shape, seed=0, radius=3.0, dtype=np.float16):
    """Synthetic ``(probs, offsets)`` for the given true landmarks (see the module docstring)."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    n_lm = landmarks.shape[0]
    rng = np.random.default_rng([int(seed), 7])
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), -1)
    diff = landmarks[None, None, None] - grid[..., None, :]  # (X, Y, Z, L, 3)
    dist = np.sqrt((diff**2).sum(-1))
    p_lm = 0.97 * np.exp(-((dist / (1.2 * radius)) ** 4))
    p_lm = np.clip(p_lm + rng.uniform(-0.05, 0.05, size=p_lm.shape), 0.0, 1.0)
    total = p_lm.sum(-1, keepdims=True)
    p_lm = np.where(total > 1.0, p_lm / np.maximum(total, 1e-12), p_lm)
    probs = np.concatenate([1.0 - p_lm.sum(-1, keepdims=True), p_lm], axis=-1)
    off = diff + rng.normal(scale=0.6, size=diff.shape)
    confused = rng.random(size=diff.shape[:-1]) < 0.05
    off += confused[..., None] * rng.uniform(-4, 4, size=diff.shape)
    offsets = np.moveaxis(off, -1, -2).reshape(*shape, 3 * n_lm)  # axis-major
    return probs.astype(dtype), offsets.astype(dtype)
