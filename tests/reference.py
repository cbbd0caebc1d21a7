"""Independent float64 NumPy references for every numvox operation, shared by all tests.

Each function is the plain definition of its operation (loops or SciPy, float64), written
without reference to numvox's kernels: tests compare the kernels against these, never against
themselves.
"""

import itertools

import numpy as np
import scipy.signal
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# -- vote aggregation and peaks ------------------------------------------------------

def ref_votes(probs, offsets, threshold, splat="nearest", layout="axis-major"):
    """Plain float64 NumPy: the definition of vote aggregation (probabilities at or above
    ``threshold`` vote for ``position + offset``; nearest or trilinear splat); returns the
    heatmaps and the total voting mass (the error scale)."""
    P = np.asarray(probs).astype(np.float64)
    O = np.asarray(offsets).astype(np.float64)
    batched = P.ndim == 5
    if not batched:
        P, O = P[None], O[None]
    B, X, Y, Z, C = P.shape
    L = C - 1
    heat = np.zeros((B, L, X, Y, Z), np.float64)
    dims = np.array([X, Y, Z], np.float64)
    with np.errstate(invalid="ignore"):
        for b in range(B):
            for l in range(L):
                p = P[b, ..., l + 1]
                vote = p >= threshold
                src = np.argwhere(vote).astype(np.float64)
                w = p[vote]
                if layout == "axis-major":
                    off = np.stack([O[b, ..., a * L + l][vote] for a in range(3)], axis=-1)
                else:
                    off = np.stack([O[b, ..., 3 * l + a][vote] for a in range(3)], axis=-1)
                t = src + off
                ok = np.all(np.isfinite(t), axis=1) & np.all((t > -2) & (t < dims + 1), axis=1)
                t, w = t[ok], w[ok]
                if splat == "nearest":
                    i = np.floor(t + 0.5).astype(np.int64)
                    inside = np.all((i >= 0) & (i < dims.astype(np.int64)), axis=1)
                    np.add.at(heat[b, l], tuple(i[inside].T), w[inside])
                else:
                    i0 = np.floor(t).astype(np.int64)
                    f = t - i0
                    for corner in np.ndindex(2, 2, 2):
                        c = np.array(corner)
                        i = i0 + c
                        wc = w * np.prod(np.where(c == 1, f, 1 - f), axis=1)
                        inside = np.all((i >= 0) & (i < dims.astype(np.int64)), axis=1)
                        np.add.at(heat[b, l], tuple(i[inside].T), wc[inside])
    mass = float(np.nansum(np.where(P[..., 1:] >= threshold, np.abs(P[..., 1:]), 0.0)))
    return (heat if batched else heat[0]), mass


def ref_peaks(heat, radius):
    H = np.asarray(heat).astype(np.float64)
    lead = H.shape[:-3]
    flat = H.reshape((-1,) + H.shape[-3:])
    coords = np.full((flat.shape[0], 3), np.nan)
    values = np.zeros(flat.shape[0])
    for n, h in enumerate(flat):
        g = np.where(np.isnan(h), -np.inf, h)
        if g.size == 0 or not np.any(g > -np.inf):
            continue
        i = np.unravel_index(np.argmax(g), g.shape)
        values[n] = g[i]
        if not g[i] > 0:
            continue
        sl = tuple(slice(max(k - radius, 0), k + radius + 1) for k in i)
        win = np.where(g[sl] > 0, g[sl], 0.0)
        grids = np.meshgrid(*[np.arange(s.start, s.start + n_) for s, n_ in zip(sl, win.shape)], indexing="ij")
        coords[n] = [np.sum(win * gg) / win.sum() for gg in grids]
    return coords.reshape(lead + (3,)), values.reshape(lead)


# -- steepest-descent labels and basins ----------------------------------------------

def ref_scores(v):
    """``(27,) + shape`` float64 scores ``(c - n) / sqrt(d2)``; -inf for out-of-volume
    neighbours and for the centre itself."""
    v = np.asarray(v).astype(np.float64)
    n0, n1, n2 = v.shape
    P = np.full((n0 + 2, n1 + 2, n2 + 2), np.nan)
    P[1:-1, 1:-1, 1:-1] = v
    S = np.full((27,) + v.shape, -np.inf)
    for k in range(27):
        da, db, dc = k // 9 - 1, (k // 3) % 3 - 1, k % 3 - 1
        if k == 13:
            continue
        nb = P[1 + da:1 + da + n0, 1 + db:1 + db + n1, 1 + dc:1 + dc + n2]
        s = (v - nb) / np.sqrt(da * da + db * db + dc * dc)
        S[k] = np.where(np.isnan(nb), -np.inf, s)  # out of volume: not a candidate
    return S


def ref_labels(v, border="inside"):
    S = ref_scores(v)
    lab = np.argmax(S, axis=0).astype(np.uint8)  # smallest k among the maxima
    lab[S.max(axis=0) < 0] = 13  # every candidate strictly greater (or none)
    if border == "zero":
        lab[0], lab[-1], lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1] = 0, 0, 0, 0, 0, 0
    return lab


def ref_basins(v, labels=None):
    """Weak components of the voxel -> descent-target graph (SciPy), numbered ``1..M`` in C
    order of each component's first voxel; ``labels`` defaults to :func:`ref_labels`."""
    lab = np.asarray(ref_labels(v) if labels is None else labels).astype(np.int64)
    shape, n = lab.shape, lab.size
    a, b, c = np.unravel_index(np.arange(n), shape)
    k = lab.ravel()
    t = np.ravel_multi_index((a + k // 9 - 1, b + (k // 3) % 3 - 1, c + k % 3 - 1), shape)
    graph = coo_matrix((np.ones(n), (np.arange(n), t)), shape=(n, n))
    m, comp = connected_components(graph, directed=True, connection="weak")
    _, first = np.unique(comp, return_index=True)
    rank = np.empty(m, np.int64)
    rank[np.argsort(first)] = np.arange(1, m + 1)
    return rank[comp].reshape(shape).astype(np.int32)


# -- batched cross-correlation -------------------------------------------------------

def ref_correlate(images, filters, mode, channel_axis=None):
    images = np.asarray(images, dtype=np.float64)
    filters = np.asarray(filters, dtype=np.float64)
    rows = []
    for x in images:
        row = []
        for f in filters:
            if channel_axis is None:
                row.append(scipy.signal.correlate(x, f, mode=mode, method="direct"))
            else:
                xc = np.moveaxis(x, channel_axis - 1 if channel_axis > 0 else channel_axis, -1)
                fc = np.moveaxis(f, channel_axis - 1 if channel_axis > 0 else channel_axis, -1)
                row.append(sum(scipy.signal.correlate(xc[..., c], fc[..., c], mode=mode, method="direct")
                               for c in range(xc.shape[-1])))
        rows.append(row)
    return np.array(rows)


def ref_ncc(image, template, mode):
    """Pearson coefficient of ``template`` and every window of zero-padded ``image`` (loops)."""
    image = np.asarray(image, dtype=np.float64)
    t = np.asarray(template, dtype=np.float64)
    full_pad = [(s - 1, s - 1) for s in t.shape]
    padded = np.pad(image, full_pad)
    full_shape = [S + s - 1 for S, s in zip(image.shape, t.shape)]
    full = np.zeros(full_shape)
    tz = t - t.mean()
    for idx in np.ndindex(*full_shape):
        w = padded[tuple(slice(i, i + s) for i, s in zip(idx, t.shape))]
        wz = w - w.mean()
        den = np.sqrt((wz * wz).sum() * (tz * tz).sum())
        full[idx] = (wz * tz).sum() / den if den > 1e-12 else 0.0
    if mode == "full":
        return full
    if mode == "same":
        sl = tuple(slice((s - 1) // 2, (s - 1) // 2 + S) for S, s in zip(image.shape, t.shape))
    else:
        sl = tuple(slice(s - 1, S) for S, s in zip(image.shape, t.shape))
    return full[sl]


# -- pixel-adaptive convolution ------------------------------------------------------

def ref_pads(S, ks, dil, padding):
    d = len(ks)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * d, (0,) * d
        tot = [dl * (k - 1) for k, dl in zip(ks, dil)]
        lo = tuple(t // 2 for t in tot)
        return lo, tuple(t - l for t, l in zip(tot, lo))
    p = (padding,) * d if np.isscalar(padding) else tuple(padding)
    return p, p


def ref_out_size(S, ks, stride, dil, padding):
    lo, hi = ref_pads(S, ks, dil, padding)
    return tuple((s + a + b - dl * (k - 1) - 1) // st + 1 for s, a, b, k, st, dl in zip(S, lo, hi, ks, stride, dil))


def ref_pac(x, f, w, b, stride, padding, dil, normalize):
    x, f, w = (np.asarray(a, np.float64) for a in (x, f, w))
    d = w.ndim - 2
    ks = w.shape[:d]
    S = x.shape[1:-1]
    stride = (stride,) * d if np.isscalar(stride) else tuple(stride)
    dil = (dil,) * d if np.isscalar(dil) else tuple(dil)
    lo, _ = ref_pads(S, ks, dil, padding)
    out_sp = ref_out_size(S, ks, stride, dil, padding)
    N, O = x.shape[0], w.shape[-1]
    out = np.zeros((N,) + out_sp + (O,))
    for n in range(N):
        for i in itertools.product(*(range(s) for s in out_sp)):
            org = [ii * s - p for ii, s, p in zip(i, stride, lo)]
            c = tuple(o + (k // 2) * dl for o, k, dl in zip(org, ks, dil))
            inside = lambda q: all(0 <= qq < s for qq, s in zip(q, S))
            fc = f[(n,) + c] if inside(c) else np.zeros(f.shape[-1])
            taps, kv = [], []
            for t in itertools.product(*(range(k) for k in ks)):
                q = tuple(o + tt * dl for o, tt, dl in zip(org, t, dil))
                if inside(q):
                    taps.append((t, q))
                    kv.append(np.exp(-0.5 * np.sum((fc - f[(n,) + q]) ** 2)))
            kv = np.array(kv)
            if normalize:
                s = kv.sum()
                kv = kv / s if s > 0 else kv * 0
            acc = np.zeros(O) if b is None else np.asarray(b, np.float64).copy()
            for (t, q), kk in zip(taps, kv):
                acc += kk * (x[(n,) + q] @ w[t])
            out[(n,) + i] = acc
    return out



def ref_labels_exact(v):
    """:func:`ref_labels` in exact arithmetic, for finite values of any size (int64 near 2**62,
    floats near their dtype's maximum): differences are Python integers / Fractions, and the
    score ``d / sqrt(m)`` of two neighbours is compared through ``d**2 * n`` against
    ``e**2 * m`` with signs, so no rounding or overflow can create or break a tie."""
    from fractions import Fraction

    v = np.asarray(v)
    exact = np.vectorize(lambda a: Fraction(int(a)) if v.dtype.kind in "iub" else Fraction(float(a)), otypes=[object])
    V = exact(v)
    n0, n1, n2 = v.shape

    def better(s, t):
        """d / sqrt(m) > e / sqrt(n), through the monotone map x -> x * |x|."""
        (d, m), (e, n) = s, t
        return d * abs(d) * n > e * abs(e) * m

    lab = np.empty(v.shape, np.uint8)
    for i, j, k in np.ndindex(*v.shape):
        best, code = None, 13
        for c in range(27):
            da, db, dc = c // 9 - 1, (c // 3) % 3 - 1, c % 3 - 1
            a, b, cc = i + da, j + db, k + dc
            if c == 13 or not (0 <= a < n0 and 0 <= b < n1 and 0 <= cc < n2):
                continue
            s = (V[i, j, k] - V[a, b, cc], da * da + db * db + dc * dc)
            if best is None or better(s, best):
                best, code = s, c
        lab[i, j, k] = 13 if best is None or best[0] < 0 else code
    return lab


# -- the PAC family (pacnet's pac.py): kernel kinds, PAC pooling, transposed PAC ------------

def ref_pac_kernel(fq, fc, kernel, channel_wise=False):
    """pacnet's ``packernel2d`` value of one tap from the guide features ``fq`` (tap) and
    ``fc`` (window centre): per feature if ``channel_wise``, else one value."""
    delta = np.asarray(fq, np.float64) - np.asarray(fc, np.float64)
    if kernel == "gaussian":
        sq = delta**2
        return np.exp(-0.5 * (sq if channel_wise else sq.sum()))
    parts = kernel.split("_")
    alpha, lam = float(parts[1]), float(parts[2])
    if "asym" in parts[3:]:
        delta = np.maximum(delta, 0.0)
    sq = delta**2
    return alpha + ((sq if channel_wise else sq.sum()) + 1e-4) ** (0.5 * lam)


def _ref_adaptive(x, f, out_sp, window, kernel, normalize, channel_wise, apply, out_ch, bias):
    """Shared loop of the family's references.  ``window(i)`` gives the guide position of the
    window centre and its taps ``(t, x position or None when the tap hits no input pixel,
    guide position)``; the guide is zero outside its image; taps that hit no input pixel
    have ``K = 0`` (pacnet's mask); ``normalize`` divides by the sum of ``K`` (by 1 where
    that sum is 0, as pacnet); ``apply(t, K_t, x_q)`` is a tap's contribution."""
    x, f = np.asarray(x, np.float64), np.asarray(f, np.float64)
    Sg = f.shape[1:-1]

    def feat(n, q):
        return f[(n,) + tuple(q)] if all(0 <= a < b for a, b in zip(q, Sg)) else np.zeros(f.shape[-1])

    out = np.zeros((x.shape[0],) + tuple(out_sp) + (out_ch,))
    for n in range(x.shape[0]):
        for i in itertools.product(*(range(s) for s in out_sp)):
            centre, taps = window(i)
            fc = feat(n, centre)
            real = [(t, q, ref_pac_kernel(feat(n, gq), fc, kernel, channel_wise)) for t, q, gq in taps if q is not None]
            if normalize and real:
                s = sum(k for _, _, k in real)
                s = np.where(s == 0, 1.0, s)
                real = [(t, q, k / s) for t, q, k in real]
            acc = np.zeros(out_ch) if bias is None else np.asarray(bias, np.float64).copy()
            for t, q, k in real:
                acc = acc + apply(t, k, x[(n,) + tuple(q)])
            out[(n,) + i] = acc
    return out


def _ref_conv_window(S, ks, stride, lo, dil):
    def window(i):
        org = [ii * s - p for ii, s, p in zip(i, stride, lo)]
        centre = [o + (k // 2) * dl for o, k, dl in zip(org, ks, dil)]
        taps = []
        for t in itertools.product(*(range(k) for k in ks)):
            q = tuple(o + tt * dl for o, tt, dl in zip(org, t, dil))
            taps.append((t, q if all(0 <= a < b for a, b in zip(q, S)) else None, q))
        return centre, taps

    return window


def _ref_tuple(v, d):
    return (v,) * d if np.isscalar(v) else tuple(v)


def ref_pac_kinds(x, f, w, b, stride, padding, dil, normalize, kernel="gaussian"):
    """``pac_conv`` with any kernel kind (pacnet's ``pacconv2d`` + ``packernel2d``)."""
    w = np.asarray(w, np.float64)
    d = w.ndim - 2
    ks, S = w.shape[:d], x.shape[1:-1]
    stride, dil = _ref_tuple(stride, d), _ref_tuple(dil, d)
    lo, _ = ref_pads(S, ks, dil, padding)
    out_sp = ref_out_size(S, ks, stride, dil, padding)
    return _ref_adaptive(x, f, out_sp, _ref_conv_window(S, ks, stride, lo, dil), kernel, normalize, False,
                         lambda t, k, xq: k * (xq @ w[t]), w.shape[-1], b)


def ref_pac_pool(x, f, ks, stride, padding, dil, normalize, kernel="gaussian", channel_wise=False):
    """pacnet's ``pacpool2d``: ``out[i, c] = sum_t K_t(i) x[q_t, c]``; ``channel_wise``: channel
    ``c``'s kernel from guide feature ``c`` alone."""
    d = len(ks)
    S = x.shape[1:-1]
    stride, dil = _ref_tuple(stride, d), _ref_tuple(dil, d)
    lo, _ = ref_pads(S, ks, dil, padding)
    out_sp = ref_out_size(S, ks, stride, dil, padding)
    return _ref_adaptive(x, f, out_sp, _ref_conv_window(S, ks, stride, lo, dil), kernel, normalize, channel_wise,
                         lambda t, k, xq: k * xq, x.shape[-1], None)


def ref_pac_transpose_size(s, ks, stride, padding, output_padding, dil):
    return tuple((a - 1) * st - 2 * p + dl * (k - 1) + 1 + op
                 for a, k, st, p, op, dl in zip(s, ks, stride, padding, output_padding, dil))


def ref_pac_transpose(x, f, w, b, stride, padding, output_padding, dil, normalize, kernel="gaussian"):
    """pacnet's ``pacconv_transpose2d`` + ``packernel2d(transposed=True)``: ``x`` zero-inserted
    by ``stride`` and padded by ``P = (k-1)*dil - padding`` (``+ output_padding`` after);
    ``out[i] = b + sum_t K_t(i) W[t]^T x_z[i + t*dil]``, ``K_t(i)`` comparing the guide at
    ``i - (k-1)*dil//2 + t*dil`` with its centre tap; taps on inserted zeros masked."""
    w = np.asarray(w, np.float64)
    d = w.ndim - 2
    ks, s = w.shape[:d], x.shape[1:-1]
    stride, dil = _ref_tuple(stride, d), _ref_tuple(dil, d)
    padding, output_padding = _ref_tuple(padding, d), _ref_tuple(output_padding, d)
    P = [(k - 1) * dl - p for k, dl, p in zip(ks, dil, padding)]
    half = [(k - 1) * dl // 2 for k, dl in zip(ks, dil)]

    def window(i):
        centre = [a - h + (k // 2) * dl for a, h, k, dl in zip(i, half, ks, dil)]
        taps = []
        for t in itertools.product(*(range(k) for k in ks)):
            z = [a + tt * dl - pp for a, tt, dl, pp in zip(i, t, dil, P)]  # zero-inserted index
            real = all(v % st == 0 and 0 <= v // st < n for v, st, n in zip(z, stride, s))
            q = tuple(v // st for v, st in zip(z, stride)) if real else None
            taps.append((t, q, [a - h + tt * dl for a, h, tt, dl in zip(i, half, t, dil)]))
        return centre, taps

    out_sp = ref_pac_transpose_size(s, ks, stride, padding, output_padding, dil)
    return _ref_adaptive(x, f, out_sp, window, kernel, normalize, False, lambda t, k, xq: k * (xq @ w[t]),
                         w.shape[-1], b)


# -- joint-upsampling example (benchmarks/upsampling.py) -----------------------------------


def ref_block_mean(a, ndim):
    """Mean of each 2x..x2 block of the ``ndim`` spatial axes of a channels-last batch, by an
    explicit sum over the block's 2**ndim offsets."""
    a = np.asarray(a, np.float64)
    total = 0.0
    for off in itertools.product((0, 1), repeat=ndim):
        total = total + a[(slice(None),) + tuple(slice(o, None, 2) for o in off)]
    return total / 2**ndim


def ref_linear_upsample2x(low, ndim):
    """x2 (multi)linear interpolation of a channels-last batch by ``scipy.ndimage.map_coordinates``
    (order 1): output sample ``j`` read at input coordinate ``(j + 0.5) / 2 - 0.5``, clamped to the
    edge samples, the half-pixel convention of a 2x block-mean downsampling."""
    import scipy.ndimage

    low = np.asarray(low, np.float64)
    sp = low.shape[1:1 + ndim]
    grids = np.meshgrid(*[np.clip((np.arange(2 * s) + 0.5) / 2 - 0.5, 0, s - 1) for s in sp], indexing="ij")
    out = np.empty((low.shape[0],) + tuple(2 * s for s in sp) + (low.shape[-1],))
    for n in range(low.shape[0]):
        for c in range(low.shape[-1]):
            out[n, ..., c] = scipy.ndimage.map_coordinates(low[n, ..., c], grids, order=1, mode="nearest")
    return out


def check_directional_derivatives(loss, bases, grads, rng, rtol=1e-6, eps=1e-6):
    """Each analytic gradient ``grads[i]`` against the central difference of ``loss(*args)``
    along a random direction of argument ``i`` (``bases``: the arguments)."""
    for i, (grad, base) in enumerate(zip(grads, bases)):
        grad = np.asarray(grad)
        assert grad.shape == np.shape(base), (i, grad.shape, np.shape(base))
        dirn = rng.standard_normal(np.shape(base))
        plus, minus = list(bases), list(bases)
        plus[i], minus[i] = base + eps * dirn, base - eps * dirn
        fd = (loss(*plus) - loss(*minus)) / (2 * eps)
        an = np.sum(grad * dirn)
        assert abs(fd - an) <= rtol * max(1.0, abs(fd), np.abs(grad).sum()), (i, fd, an)
