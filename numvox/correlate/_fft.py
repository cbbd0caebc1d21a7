"""FFT path of :func:`numvox.correlate_batch` (SciPy on the CPU, CuPy/cuFFT on CUDA).

Each image and each filter is transformed once (real-to-complex, in float32 for float32
inputs); per (image, filter) pair only a product of spectra and one inverse transform is
computed, in blocks of pairs whose working memory stays below ``BLOCK_BYTES``.

Padding: the image is placed at offset ``-lo`` of a zero buffer of ``F`` per axis, with
``F >= max(S - lo, O + lo + s - 1)``; the circular correlation ``sum_i buf[o + i] f[i]`` then
equals the wanted ``sum_i img[o + lo + i] f[i]`` (zero outside the image) on ``o < O``, so the
output is a plain slice of the inverse transform.  For ``mode="same"`` this is
``S + s // 2`` (not ``S + s - 1``) and for ``"valid"`` just ``S``: wrap-around falls only in the
discarded part.
"""

import numpy as np

from ._cpu import spectra_products
from ._normalize import centred_filters, window_variance
from ._rules import fft_sizes

BLOCK_BYTES = 96 * 2**20


class _Backend:
    def __init__(self, xp):
        self.xp = xp
        if xp is np:
            import numba
            import scipy.fft

            self._fft = scipy.fft
            self._kw = {"workers": max(1, numba.get_num_threads())}
        else:  # pragma: no cover - needs a GPU
            import cupy.fft

            self._fft = cupy.fft
            self._kw = {}

    def rfftn(self, x, s, axes):
        return self._fft.rfftn(x, s=s, axes=axes, **self._kw)

    def irfftn_head(self, x, s, axes, keep):
        """``irfftn(x, s, axes)[..., :keep]`` (``keep[i]`` outputs along ``axes[i]``); ``x`` (a
        temporary) may be overwritten.

        On the CPU the inverse transform is pruned: complex inverse transforms along the
        other axes one at a time, each result cut to the kept outputs before the next, and the
        complex-to-real transform last, only on the kept lines (about a third less work for
        "same" outputs, which keep 2/3 of each axis).
        """
        if self.xp is not np:  # pragma: no cover - needs a GPU
            res = self._fft.irfftn(x, s=s, axes=axes)
            return res[_head(res.ndim, axes, keep)]
        own = True
        for ax, n, k in zip(axes[:-1], s[:-1], keep[:-1]):
            x = self._fft.ifft(x, n=n, axis=ax, overwrite_x=own, **self._kw)
            x = x[_head(x.ndim, (ax,), (k,))]
            own = False
        x = self._fft.irfft(x, n=s[-1], axis=axes[-1], overwrite_x=own, **self._kw)
        return x[_head(x.ndim, axes[-1:], keep[-1:])]


def _head(ndim, axes, keep):
    index = [slice(None)] * ndim
    for ax, k in zip(axes, keep):
        index[ax] = slice(0, k)
    return tuple(index)


def stack_axis(geom):
    """The item axis handled by direct summation of spectra instead of a transform.

    ``None`` (transform every spatial axis) or the index of a spatial axis whose filter and
    output are so short (``s * O <= 16``, e.g. the 3 colour planes of an RGB item correlated
    in "same" mode) that summing ``s`` spectrum products per output plane is cheaper than
    transforming along it (short strided transforms are slow, and the other axes' inverse
    transforms shrink from ``F`` planes to ``O``).
    """
    if geom.ca is not None or len(geom.S) < 2:
        return None
    cost = [s * o for s, o in zip(geom.s, geom.O)]
    d = min(range(len(cost)), key=lambda i: cost[i])
    return d if cost[d] <= 16 else None


def correlate_fft(xp, img, flt, geom, ftype, reduce, normalize, out, values, flat_pos, bar):
    """Run the FFT path.

    ``img`` ``(N, *item)``, ``flt`` ``(K, *item)`` (the caller's arrays, any dtype and strides),
    ``geom`` the call's geometry; results go to ``out`` ``(N, K, *O)`` (reduce None) or
    ``values`` and ``flat_pos`` ``(N, K)`` (flat index into ``O``).

    One item axis is "stacked" (moved next to the batch axis and not transformed): the
    channel axis (summed: one output plane) or, with ``channel_axis=None``, the axis chosen by
    :func:`stack_axis` (``O`` planes, each a sum of ``s`` spectrum products), or a dummy
    length-1 axis.
    """
    be = _Backend(xp)
    N, K = img.shape[0], flt.shape[0]
    d_user = len(geom.O)
    ca, spatial = geom.ca, geom.spatial
    sd = stack_axis(geom)
    if ca is not None:  # channels: summed, one output plane
        src = ca
        Sc = sc = geom.C
        loc, Oc = 0, 1
        rest = list(range(d_user))
    elif sd is not None:
        src = spatial[sd]
        Sc, sc, loc, Oc = geom.S[sd], geom.s[sd], geom.lo[sd], geom.O[sd]
        rest = [i for i in range(d_user) if i != sd]
    else:
        src = None
        Sc = sc = Oc = 1
        loc = 0
        rest = list(range(d_user))
    if src is None:
        I, Fl = img[:, None], flt[:, None]
    else:
        I, Fl = xp.moveaxis(img, src, 1), xp.moveaxis(flt, src, 1)
    S = [geom.S[i] for i in rest]
    s = [geom.s[i] for i in rest]
    lo = [geom.lo[i] for i in rest]
    O = [geom.O[i] for i in rest]
    Ouser = list(geom.O)
    d = len(S)
    F = fft_sizes(S, s, lo, O)
    order = sorted(range(d), key=lambda i: F[i])  # real transform along the longest axis
    axes = tuple(2 + i for i in order)
    sfft = [F[i] for i in order]
    ctype = np.complex64 if ftype == np.float32 else np.complex128
    fsize, csize = np.dtype(ftype).itemsize, np.dtype(ctype).itemsize
    half = list(F)
    half[order[-1]] = F[order[-1]] // 2 + 1
    M = int(np.prod(half))
    P = int(np.prod(F))
    nout = int(np.prod(Ouser))

    # filter spectra, conjugated, once per filter
    ssd_all = None
    FF = xp.empty((K, sc, *half), dtype=ctype)
    fchunk = max(1, min(K, BLOCK_BYTES // max(1, sc * (P * fsize + M * csize) * 2)))
    ssd_parts = []
    for k0 in range(0, K, fchunk):
        fb = Fl[k0:k0 + fchunk]
        if normalize:
            fb, ssd = centred_filters(xp, fb, ftype)
            ssd_parts.append(ssd)
        else:
            fb = fb.astype(ftype, copy=False)
        FF[k0:k0 + fchunk] = xp.conj(be.rfftn(fb, sfft, axes))
    if normalize:
        ssd_all = xp.concatenate(ssd_parts)
    FFm = FF.reshape(K, sc, M)

    # block sizes: pairs per block from the working memory of one pair
    # product (+ a working copy) + inverse transform output, region copy, normalisation
    per_pair = Oc * (2 * M * csize + P * fsize) + nout * (2 * fsize + (24 if normalize else 0)) + 64
    pairs = max(1, BLOCK_BYTES // per_pair)
    bk = min(K, pairs)
    per_image = Sc * (P * fsize + M * csize) + (nout * 8 * 4 if normalize else 0)
    bn = max(1, min(N, pairs // bk, BLOCK_BYTES // max(1, per_image)))
    eps = float(np.finfo(ftype).eps)
    place = (slice(None), slice(None)) + tuple(slice(-l, -l + n) for l, n in zip(lo, S))
    img_cf = None
    if normalize:
        img_cf = img[:, None] if ca is None else xp.moveaxis(img, ca, 1)

    for n0 in range(0, N, bn):
        n1 = min(N, n0 + bn)
        buf = xp.zeros((n1 - n0, Sc, *F), dtype=ftype)
        buf[place] = I[n0:n1]
        FI = be.rfftn(buf, sfft, axes)
        del buf
        if normalize:
            var = window_variance(xp, img_cf[n0:n1], geom.s, geom.lo, Ouser)  # (bn, *Ouser)
        for k0 in range(0, K, bk):
            k1 = min(K, k0 + bk)
            if xp is np:
                prod = np.empty((n1 - n0, k1 - k0, Oc, *half), dtype=ctype)
                spectra_products(FI.reshape(n1 - n0, Sc, M), FFm[k0:k1], np.int64(loc),
                                 prod.reshape(n1 - n0, k1 - k0, Oc, M))
            else:  # pragma: no cover - needs a GPU
                prod = xp.zeros((n1 - n0, k1 - k0, Oc, *half), dtype=ctype)
                for o in range(Oc):
                    for i in range(sc):
                        c = o + loc + i
                        if 0 <= c < Sc:
                            prod[:, :, o] += FI[:, None, c] * FF[None, k0:k1, i]
            r = be.irfftn_head(prod, sfft, tuple(a + 1 for a in axes), [O[i] for i in order])  # (bn, bk, Oc, *O)
            del prod
            r = r[:, :, 0] if src is None or ca is not None else xp.moveaxis(r, 2, 2 + sd)
            if normalize:
                den = xp.sqrt(var[:, None] * ssd_all[k0:k1].reshape((1, k1 - k0) + (1,) * d_user))
                ok = den > eps
                r = xp.where(ok, r / xp.where(ok, den, 1.0), 0.0).astype(ftype, copy=False)
                del den, ok
            if reduce is None:
                out[n0:n1, k0:k1] = r
            else:
                if reduce == "max":
                    values[n0:n1, k0:k1] = r.max(axis=tuple(range(2, 2 + d_user)))
                else:
                    flat = r.reshape(n1 - n0, k1 - k0, nout)
                    idx = xp.argmax(flat, axis=2)
                    flat_pos[n0:n1, k0:k1] = idx
                    values[n0:n1, k0:k1] = xp.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
            del r
            bar.update((n1 - n0) * (k1 - k0))
