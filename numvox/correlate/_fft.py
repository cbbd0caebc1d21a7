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

from ._normalize import centred_filters, window_variance

BLOCK_BYTES = 96 * 2**20


def fft_sizes(S, s, lo, O, xp_is_numpy=True):
    import scipy.fft

    sizes = []
    for d in range(len(S)):
        need = max(S[d] - lo[d], O[d] + lo[d] + s[d] - 1, s[d])
        sizes.append(scipy.fft.next_fast_len(need, real=True))
    return sizes


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

    def irfftn(self, x, s, axes):
        return self._fft.irfftn(x, s=s, axes=axes, **self._kw)


def correlate_fft(xp, img, flt, geom, ftype, reduce, normalize, out, values, flat_pos, bar):
    """Run the FFT path.

    ``img`` ``(N, C, *S)``, ``flt`` ``(K, C, *s)`` (views, any dtype), ``geom`` the call's
    geometry; results go to ``out`` ``(N, K, *O)`` (reduce None) or ``values`` and
    ``flat_pos`` ``(N, K)`` (flat index into ``O``).
    """
    be = _Backend(xp)
    N, C = img.shape[0], img.shape[1]
    K = flt.shape[0]
    S, s, lo, O = geom["S"], geom["s"], geom["lo"], geom["O"]
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
    nout = int(np.prod(O))

    # filter spectra, conjugated, once per filter
    ssd_all = None
    FF = xp.empty((K, C, *half), dtype=ctype)
    fchunk = max(1, min(K, BLOCK_BYTES // max(1, C * (P * fsize + M * csize) * 2)))
    ssd_parts = []
    for k0 in range(0, K, fchunk):
        fb = flt[k0:k0 + fchunk]
        if normalize:
            fb, ssd = centred_filters(xp, fb, ftype)
            ssd_parts.append(ssd)
        else:
            fb = fb.astype(ftype, copy=False)
        FF[k0:k0 + fchunk] = xp.conj(be.rfftn(fb, sfft, axes))
    if normalize:
        ssd_all = xp.concatenate(ssd_parts)

    # block sizes: pairs per block from the working memory of one pair
    per_pair = M * csize * (2 if C > 1 else 1) + P * fsize + nout * (fsize + 16 if normalize else fsize) + 64
    pairs = max(1, BLOCK_BYTES // per_pair)
    bk = min(K, pairs)
    per_image = C * (P * fsize + M * csize) + (nout * 8 * 3 if normalize else 0)
    bn = max(1, min(N, pairs // bk, BLOCK_BYTES // max(1, per_image)))
    eps = float(np.finfo(ftype).eps)
    place = (slice(None), slice(None)) + tuple(slice(-l, -l + n) for l, n in zip(lo, S))
    region = (slice(None), slice(None)) + tuple(slice(0, o) for o in O)

    for n0 in range(0, N, bn):
        n1 = min(N, n0 + bn)
        buf = xp.zeros((n1 - n0, C, *F), dtype=ftype)
        buf[place] = img[n0:n1]
        FI = be.rfftn(buf, sfft, axes)
        del buf
        if normalize:
            var = window_variance(xp, img[n0:n1], s, lo, O)  # (bn, *O)
        for k0 in range(0, K, bk):
            k1 = min(K, k0 + bk)
            if C == 1:
                prod = FI[:, None, 0] * FF[None, k0:k1, 0]
            else:
                a = FI.reshape(n1 - n0, C, M).transpose(2, 0, 1)
                b = FF[k0:k1].reshape(k1 - k0, C, M).transpose(2, 1, 0)
                prod = xp.matmul(a, b).transpose(1, 2, 0).reshape(n1 - n0, k1 - k0, *half)
            res = be.irfftn(prod, sfft, axes)
            del prod
            r = res[region]
            if normalize:
                den = xp.sqrt(var[:, None] * ssd_all[k0:k1].reshape((1, k1 - k0) + (1,) * d))
                ok = den > eps
                r = xp.where(ok, r / xp.where(ok, den, 1.0), 0.0).astype(ftype, copy=False)
                del den, ok
            if reduce is None:
                out[n0:n1, k0:k1] = r
            else:
                flat = r.reshape(n1 - n0, k1 - k0, nout)
                idx = xp.argmax(flat, axis=2)
                flat_pos[n0:n1, k0:k1] = idx
                values[n0:n1, k0:k1] = xp.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
            del res, r
            bar.update((n1 - n0) * (k1 - k0))
