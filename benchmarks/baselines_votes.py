"""What a user would otherwise run to aggregate landmark votes (seed 000), and the inputs.

* :func:`seed_loops` -- the question's plain-Python approach (three nested loops over the
  voxels, one vote at a time), "7 s at 70^3".
* :func:`numpy_bincount` -- the best plain-NumPy approach: ``np.flatnonzero`` filter of the
  voting voxels per landmark, gather of their offsets, ``np.bincount`` with weights.
* :func:`tf_filter_scatter` -- the question's vectorised TensorFlow filter (``tf.where`` +
  ``tf.gather_nd``), followed by ``tf.tensor_scatter_nd_add`` instead of the Python loop.
* :func:`read_floor` -- ``probs.sum(); offsets.sum()``: reading both inputs once with NumPy.
"""

import math

import numpy as np


def realistic_inputs(shape, L=3, vote_fraction=0.12, seed=0, dtype=np.float32):
    """Votes concentrated in spheres around ``L`` landmarks (about ``vote_fraction`` of the
    voxels vote), probabilities below 0.5 elsewhere; offsets point at the landmark (plus
    noise of 0.5 voxel) inside the spheres and are noise of 3 voxels outside."""
    rng = np.random.default_rng(seed)
    X, Y, Z = shape
    n = X * Y * Z
    r = (3.0 * vote_fraction * n / (4.0 * math.pi * L)) ** (1.0 / 3.0)
    landmarks = np.stack(
        [rng.uniform(0.25 * s, 0.75 * s, L) for s in shape], axis=1
    ) + rng.uniform(-0.5, 0.5, (L, 3))
    probs = np.empty(shape + (L + 1,), dtype)
    offsets = np.empty(shape + (3 * L,), dtype)
    xs, ys, zs = (np.arange(s, dtype=np.float32) for s in shape)
    for x in range(X):  # slab by slab: keeps the generator's temporaries small
        gy, gz = np.meshgrid(ys, zs, indexing="ij")
        total = np.zeros((Y, Z), np.float32)
        for l, (lx, ly, lz) in enumerate(landmarks):
            dx, dy, dz = lx - xs[x], ly - gy, lz - gz
            inside = dx * dx + dy * dy + dz * dz <= r * r
            p = np.where(inside, rng.uniform(0.55, 0.95, (Y, Z)), rng.uniform(0.0, 0.45, (Y, Z)) / L)
            probs[x, :, :, l + 1] = p
            total += p.astype(np.float32)
            noise = rng.normal(0.0, 0.5, (3, Y, Z))
            far = rng.normal(0.0, 3.0, (3, Y, Z))
            for a, d in enumerate((np.broadcast_to(dx, (Y, Z)), dy, dz)):
                offsets[x, :, :, a * L + l] = np.where(inside, d + noise[a], far[a])
        probs[x, :, :, 0] = np.clip(1.0 - total, 0.0, 1.0)
    return probs, offsets, landmarks, r


def uniform_inputs(shape, L=3, seed=0, dtype=np.float32):
    """The question's test data: normalised uniform probabilities, offsets ``100 * U(0, 1)``."""
    rng = np.random.default_rng(seed)
    probs = rng.random(shape + (L + 1,), dtype=np.float32)
    probs /= probs.sum(-1, keepdims=True)
    offsets = 100.0 * rng.random(shape + (3 * L,), dtype=np.float32)
    return probs.astype(dtype, copy=False), offsets.astype(dtype, copy=False)


def seed_loops(probs, offsets, threshold=0.5):
    """The question's plain-Python aggregation: nested loops, one vote at a time (nearest)."""
    X, Y, Z, C = probs.shape
    L = C - 1
    heat = np.zeros((L, X, Y, Z), np.float32)
    p_all = probs.tolist()
    o_all = offsets.tolist()
    for x in range(X):
        px, ox = p_all[x], o_all[x]
        for y in range(Y):
            pxy, oxy = px[y], ox[y]
            for z in range(Z):
                p, o = pxy[z], oxy[z]
                for l in range(L):
                    w = p[l + 1]
                    if w >= threshold:
                        tx = math.floor(x + o[l] + 0.5)
                        ty = math.floor(y + o[L + l] + 0.5)
                        tz = math.floor(z + o[2 * L + l] + 0.5)
                        if 0 <= tx < X and 0 <= ty < Y and 0 <= tz < Z:
                            heat[l, tx, ty, tz] += w
    return heat


def numpy_bincount(probs, offsets, threshold=0.5):
    """Best plain NumPy (nearest splat): filter with ``np.flatnonzero``, gather the offsets
    of the voting voxels, one weighted ``np.bincount`` per landmark."""
    X, Y, Z, C = probs.shape
    L = C - 1
    n = X * Y * Z
    P = probs.reshape(n, C)
    O = offsets.reshape(n, 3 * L)
    heat = np.empty((L, n), np.float32)
    dims = (X, Y, Z)
    for l in range(L):
        idx = np.flatnonzero(P[:, l + 1] >= threshold)
        w = P[idx, l + 1]
        src = np.unravel_index(idx, dims)
        flat = np.zeros(idx.size, np.int64)
        ok = np.ones(idx.size, bool)
        for a in range(3):
            t = np.floor(src[a] + O[idx, a * L + l].astype(np.float64) + 0.5)
            ok &= (t >= 0) & (t < dims[a])
            flat = flat * dims[a] + np.where(ok, t, 0).astype(np.int64)
        heat[l] = np.bincount(flat[ok], weights=w[ok], minlength=n)
    return heat.reshape(L, X, Y, Z)


def read_floor(probs, offsets):
    """Reading both inputs once with NumPy."""
    return probs.sum(), offsets.sum()


def make_tf_filter_scatter(shape, L, threshold=0.5):
    """A compiled ``tf.function`` running the question's vectorised filter (``tf.where``,
    ``tf.gather_nd``, bounds mask) and ``tf.tensor_scatter_nd_add`` (nearest splat)."""
    import tensorflow as tf

    X, Y, Z = shape
    dims = tf.constant([X, Y, Z], tf.float32)

    @tf.function(jit_compile=False)
    def run(probs, dists):
        p = probs[..., 1:]
        indices = tf.where(p >= threshold)  # (n, 4): x, y, z, l
        w = tf.gather_nd(p, indices)
        l = indices[:, 3]
        d = tf.stack(
            [tf.gather_nd(dists, tf.concat([indices[:, :3], (l + a * L)[:, None]], axis=1)) for a in range(3)],
            axis=1,
        )
        t = tf.floor(tf.cast(indices[:, :3], tf.float32) + d + 0.5)
        ok = tf.reduce_all((t >= 0) & (t < dims), axis=1)
        t = tf.boolean_mask(t, ok)
        target = tf.concat([tf.boolean_mask(l, ok)[:, None], tf.cast(t, tf.int64)], axis=1)
        return tf.tensor_scatter_nd_add(tf.zeros((L, X, Y, Z), tf.float32), target, tf.boolean_mask(w, ok))

    return run


def numpy_peaks(heat, radius=1):
    """Plain NumPy peaks: ``np.argmax`` per heatmap plus the centroid of its window."""
    L = heat.shape[0]
    coords = np.full((L, 3), np.nan)
    values = np.zeros(L)
    for l in range(L):
        h = heat[l]
        i = np.unravel_index(np.argmax(h), h.shape)
        values[l] = h[i]
        if h[i] > 0:
            sl = tuple(slice(max(k - radius, 0), k + radius + 1) for k in i)
            win = np.maximum(h[sl].astype(np.float64), 0)
            grids = np.meshgrid(*[np.arange(s.start, s.start + m) for s, m in zip(sl, win.shape)], indexing="ij")
            coords[l] = [np.sum(win * g) / win.sum() for g in grids]
    return coords, values
