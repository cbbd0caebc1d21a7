"""FFT path of :func:`numvox.correlate_batch` (SciPy or FFTW on the CPU, CuPy/cuFFT on CUDA).

Each image and each filter is transformed once (real-to-complex, in float32 for float32
inputs); per (image, filter) pair only a product of spectra and one inverse transform is
computed.  On the CPU, pairs are processed in small *tasks* (a few images times a few
filters, whose products fill about ``TASK_BYTES``) by one worker thread per core: the Numba
kernel writes the task's spectra products straight into the worker's engine buffer
(:mod:`._fft_engines`), the engine runs the pruned inverse transform single-threaded, and the
task's maxima (or maps) are taken while the data is still in the core's cache.  Images are
transformed in blocks whose spectra take at most ``BLOCK_BYTES``; the filters' spectra are
kept for the whole call.

Padding: the image is placed at offset ``-lo`` of a zero buffer of ``F`` per axis, with
``F >= max(S - lo, O + lo + s - 1)``; the circular correlation ``sum_i buf[o + i] f[i]`` then
equals the wanted ``sum_i img[o + lo + i] f[i]`` (zero outside the image) on ``o < O``, so the
output is a plain slice of the inverse transform.  For ``mode="same"`` this is
``S + s // 2`` (not ``S + s - 1``) and for ``"valid"`` just ``S``: wrap-around falls only in the
discarded part.
"""

import math
import threading
from typing import NamedTuple, Optional

import numpy as np

from ._normalize import centred_filters, window_variance
from ._rules import fft_sizes

BLOCK_BYTES = 96 * 2**20
TASK_BYTES = 2**20  # spectra products of one task: about a core's L2 cache


class Layout(NamedTuple):
    """How the item axes are transformed.

    ``src``: the input axis stacked next to the batch axis and not transformed (None: a
    dummy length-1 axis); ``Sc``/``sc`` its image/filter lengths, ``loc`` its offset and ``Oc``
    the output planes along it (1 for a summed channel axis); ``sd`` its index among the
    correlated axes when it is one of them; ``rest`` the transformed axes' indices among the
    correlated axes, with ``S``, ``s``, ``lo``, ``O`` their geometry and ``F`` their transform
    lengths; ``order`` the order in which the inverse transforms run (the real transform, last,
    along the longest axis); ``half`` the spectrum's shape; ``M``/``P`` spectrum/transform sizes.
    """

    src: Optional[int]
    Sc: int
    sc: int
    loc: int
    Oc: int
    sd: Optional[int]
    rest: list
    S: list
    s: list
    lo: list
    O: list
    F: list
    order: list
    half: list
    M: int
    P: int


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


def layout(geom):
    """The :class:`Layout` of a call's geometry."""
    d_user = len(geom.O)
    sd = stack_axis(geom)
    if geom.ca is not None:  # channels: summed, one output plane
        src, Sc, sc, loc, Oc = geom.ca, geom.C, geom.C, 0, 1
    elif sd is not None:
        src, Sc, sc, loc, Oc = geom.spatial[sd], geom.S[sd], geom.s[sd], geom.lo[sd], geom.O[sd]
    else:
        src, Sc, sc, loc, Oc = None, 1, 1, 0, 1
    rest = [i for i in range(d_user) if i != sd]
    S, s, lo, O = ([v[i] for i in rest] for v in (geom.S, geom.s, geom.lo, geom.O))
    F = fft_sizes(S, s, lo, O)
    order = sorted(range(len(F)), key=lambda i: F[i])  # real transform along the longest axis
    half = list(F)
    half[order[-1]] = F[order[-1]] // 2 + 1
    return Layout(src, Sc, sc, loc, Oc, sd, rest, S, s, lo, O, F, order, half, math.prod(half), math.prod(F))


def _rfftn(xp, x, s, axes):
    if xp is np:
        import numba
        import scipy.fft

        return scipy.fft.rfftn(x, s=s, axes=axes, workers=max(1, numba.get_num_threads()))
    return xp.fft.rfftn(x, s=s, axes=axes)  # pragma: no cover - needs a GPU


def _image_spectra(xp, block, lay, ftype):
    """Spectra ``(B, Sc, M)`` of images ``(B, Sc, *S)`` placed at offset ``-lo``."""
    buf = xp.zeros((block.shape[0], lay.Sc, *lay.F), dtype=ftype)
    buf[(slice(None), slice(None)) + tuple(slice(-lo, -lo + n) for lo, n in zip(lay.lo, lay.S))] = block
    sfft = [lay.F[i] for i in lay.order]
    return _rfftn(xp, buf, sfft, tuple(2 + i for i in lay.order)).reshape(block.shape[0], lay.Sc, lay.M)


def _filter_spectra(xp, Fl, lay, ftype, ctype, normalize, scale):
    """Conjugated filter spectra ``(K, sc, M)`` times ``scale``, and the filters' float64 sums
    of squared deviations (``normalize``; else None), in chunks of ``BLOCK_BYTES``."""
    K = Fl.shape[0]
    sfft = [lay.F[i] for i in lay.order]
    axes = tuple(2 + i for i in lay.order)
    FF = xp.empty((K, lay.sc, lay.M), dtype=ctype)
    per_filter = lay.sc * (lay.P * np.dtype(ftype).itemsize + lay.M * np.dtype(ctype).itemsize) * 2
    chunk = max(1, min(K, BLOCK_BYTES // max(1, per_filter)))
    ssd = []
    for k0 in range(0, K, chunk):
        fb = Fl[k0:k0 + chunk]
        if normalize:
            fb, part = centred_filters(xp, fb, ftype)
            ssd.append(part)
        else:
            fb = fb.astype(ftype, copy=False)
        spec = xp.conj(_rfftn(xp, fb, sfft, axes)).reshape(fb.shape[0], lay.sc, lay.M)
        if scale != 1.0:
            spec *= scale
        FF[k0:k0 + chunk] = spec
    return FF, (xp.concatenate(ssd) if normalize else None)


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
    lay = layout(geom)
    if lay.src is None:
        I, Fl = img[:, None], flt[:, None]
    else:
        I, Fl = xp.moveaxis(img, lay.src, 1), xp.moveaxis(flt, lay.src, 1)
    ctype = np.complex64 if ftype == np.float32 else np.complex128
    host = xp is np
    # host engines return unscaled inverse transforms: 1 / P is folded into the filter spectra
    FF, ssd = _filter_spectra(xp, Fl, lay, ftype, ctype, normalize, 1.0 / lay.P if host else 1.0)
    img_cf = None
    if normalize:
        img_cf = img[:, None] if geom.ca is None else xp.moveaxis(img, geom.ca, 1)
    run = _run_host if host else _run_device
    run(I, img_cf, FF, ssd, geom, lay, ftype, reduce, out, values, flat_pos, bar)


class _Finish:
    """Turns the maps of a task ``(ga, gb, *Ouser)`` (in user axis order) into the results:
    normalisation, then the maps themselves or their maxima / first positions of maxima."""

    def __init__(self, xp, geom, lay, ftype, reduce, ssd, out, values, flat_pos):
        self.xp, self.geom, self.lay, self.ftype, self.reduce = xp, geom, lay, ftype, reduce
        self.ssd, self.out, self.values, self.flat_pos = ssd, out, values, flat_pos
        self.eps = float(np.finfo(ftype).eps)

    def user_order(self, r):
        """``(ga, gb, Oc, *O)`` maps in transform layout to ``(ga, gb, *Ouser)``."""
        if self.lay.sd is None:
            return r[:, :, 0]
        return self.xp.moveaxis(r, 2, 2 + self.lay.sd)

    def __call__(self, r, var, a0, a1, k0, k1):
        """``var``: window variances ``(ga, *Ouser)`` of these images (``normalize``) or None."""
        xp, d_user = self.xp, len(self.geom.O)
        if var is not None:
            den = xp.sqrt(var[:, None] * self.ssd[k0:k1].reshape((1, k1 - k0) + (1,) * d_user))
            ok = den > self.eps
            r = xp.where(ok, r / xp.where(ok, den, 1.0), 0.0).astype(self.ftype, copy=False)
        if self.reduce is None:
            self.out[a0:a1, k0:k1] = r
        elif self.reduce == "max":
            self.values[a0:a1, k0:k1] = r.max(axis=tuple(range(2, 2 + d_user)))
        else:
            flat = r.reshape(a1 - a0, k1 - k0, -1)
            idx = xp.argmax(flat, axis=2)
            self.flat_pos[a0:a1, k0:k1] = idx
            self.values[a0:a1, k0:k1] = xp.take_along_axis(flat, idx[..., None], axis=2)[..., 0]


def _task_sizes(N, K, lay, csize):
    """``(ga, gb)``: images and filters per task, products filling about ``TASK_BYTES``."""
    pair = lay.Oc * lay.M * csize
    gb = max(1, min(K, TASK_BYTES // pair))
    ga = max(1, min(N, TASK_BYTES // (pair * gb)))
    return ga, gb


def path_costs(geom, csize):
    """``(flops, bytes)`` of the CPU FFT path for ``geom`` with complex items of ``csize``
    bytes: the roofline model of the benchmarks.

    Flops: forward real transforms (``2.5 P log2 P`` each), per pair the spectra products
    (8 per complex multiply-add), the pruned inverse transforms (``5 n log2 n`` per complex
    line, ``2.5 n log2 n`` per complex-to-real line) and one compare per output.  Bytes: the
    inputs once, the spectra each task reads (the filters' once per image group, the images'
    once per filter group) and the results.
    """
    lay = layout(geom)
    N, K = geom.N, geom.K
    fwd = (N * lay.Sc + K * lay.sc) * 2.5 * lay.P * math.log2(max(lay.P, 2))
    terms = sum(1 for o in range(lay.Oc) for i in range(lay.sc) if 0 <= o + lay.loc + i < lay.Sc)
    inverse, dims = 0.0, list(lay.half)
    for step, ax in enumerate(lay.order):
        n = lay.F[ax]
        lines = math.prod(dims) // dims[ax]
        inverse += lines * (2.5 if step == len(lay.order) - 1 else 5.0) * n * math.log2(max(n, 2))
        dims[ax] = lay.O[ax]
    per_pair = 8 * terms * lay.M + lay.Oc * inverse + math.prod(geom.O)
    ga, gb = _task_sizes(N, K, lay, csize)
    tasks = -(-N // ga) * -(-K // gb)
    spectra = tasks * (gb * lay.sc + ga * lay.Sc) * lay.M * csize
    fsize = csize // 2
    items = N * math.prod(geom.S) * geom.C + K * math.prod(geom.s) * geom.C
    nbytes = items * fsize + spectra + N * K * fsize
    return fwd + N * K * per_pair, nbytes


def _run_host(I, img_cf, FF, ssd, geom, lay, ftype, reduce, out, values, flat_pos, bar):
    """CPU driver: image blocks; in each, tasks (filter group outer, so that a group's spectra
    stay in cache while the images pass) shared by one worker thread per Numba thread."""
    import numba

    from ._fft_engines import acquire, engine_name, release

    N, K = I.shape[0], FF.shape[0]
    csize, fsize = np.dtype(FF.dtype).itemsize, np.dtype(ftype).itemsize
    ga, gb = _task_sizes(N, K, lay, csize)
    axes = tuple(2 + i for i in lay.order)
    sfft = [lay.F[i] for i in lay.order]
    keep = [lay.O[i] for i in lay.order]
    nout = math.prod(geom.O)
    per_image = lay.Sc * (lay.P * fsize + lay.M * csize) + (nout * 8 * 4 if img_cf is not None else 0)
    bn = max(ga, min(N, BLOCK_BYTES // max(1, per_image)) // ga * ga)
    tasks_per_block = -(-min(bn, N) // ga) * -(-K // gb)
    workers = max(1, min(numba.get_num_threads(), tasks_per_block))
    key, engines = acquire(engine_name(), workers, (ga * gb, lay.Oc, *lay.half), FF.dtype, sfft, axes, keep,
                           N * K * lay.Oc * lay.P)
    finish = _Finish(np, geom, lay, ftype, reduce, ssd, out, values, flat_pos)
    try:
        for n0 in range(0, N, bn):
            n1 = min(N, n0 + bn)
            FI = _image_spectra(np, I[n0:n1], lay, ftype)
            var = None
            if img_cf is not None:
                var = window_variance(np, img_cf[n0:n1], geom.s, geom.lo, list(geom.O))
            tasks = [(a0, min(n1, a0 + ga), k0, min(K, k0 + gb))
                     for k0 in range(0, K, gb) for a0 in range(n0, n1, ga)]
            block = _Block(tasks, FI, n0, var, FF, lay, finish, reduce, bar)
            block.run(engines)
            del FI
    finally:
        release(key, engines)


class _Block:
    """The tasks of one image block, run by worker threads that take the next task in turn."""

    def __init__(self, tasks, FI, n0, var, FF, lay, finish, reduce, bar):
        self.tasks, self.FI, self.n0, self.var, self.FF = tasks, FI, n0, var, FF
        self.lay, self.finish, self.bar = lay, finish, bar
        self.fast_max = reduce == "max" and var is None
        self._lock = threading.Lock()
        self._next = 0
        self._error = None

    def run(self, engines):
        if len(engines) == 1:
            self._work(engines[0])
        else:
            threads = [threading.Thread(target=self._work, args=(e,)) for e in engines]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if self._error is not None:
            raise self._error

    def _take(self, done):
        with self._lock:
            if done:
                self.bar.update(done)
            if self._error is not None or self._next >= len(self.tasks):
                return None
            self._next += 1
            return self.tasks[self._next - 1]

    def _work(self, engine):
        from ._cpu import task_max, task_products

        lay = self.lay
        G = engine.input.shape[0]
        products = engine.input.reshape(G, lay.Oc, lay.M)
        real = lay.order[-1]  # the real-transform axis among the transformed ones
        done = 0
        try:
            while (task := self._take(done)) is not None:
                a0, a1, k0, k1 = task
                ga, gb = a1 - a0, k1 - k0
                task_products(self.FI[a0 - self.n0:a1 - self.n0], self.FF[k0:k1], np.int64(lay.loc), products)
                full = engine.run()  # (G, Oc, *dims), dims cut to O except the real axis (F)
                dims = full.shape[2:]
                if self.fast_max:
                    r4 = full.reshape(G, lay.Oc * math.prod(dims[:real]), dims[real], math.prod(dims[real + 1:]))
                    vals = np.empty(ga * gb, dtype=full.dtype)
                    task_max(r4, lay.O[real], vals)
                    self.finish.values[a0:a1, k0:k1] = vals.reshape(ga, gb)
                else:
                    cut = (slice(None),) * (2 + real) + (slice(0, lay.O[real]),)
                    r = full[:ga * gb][cut].reshape(ga, gb, lay.Oc, *lay.O)
                    var = None if self.var is None else self.var[a0 - self.n0:a1 - self.n0]
                    self.finish(self.finish.user_order(r), var, a0, a1, k0, k1)
                done = ga * gb
        except BaseException as exc:  # re-raised by run() in the calling thread
            with self._lock:
                self._error = exc


def _run_device(I, img_cf, FF, ssd, geom, lay, ftype, reduce, out, values, flat_pos, bar):  # pragma: no cover
    """CUDA driver (CuPy): blocks of images times blocks of filters, whole-array operations."""
    import cupy as xp

    N, K = I.shape[0], FF.shape[0]
    csize, fsize = np.dtype(FF.dtype).itemsize, np.dtype(ftype).itemsize
    nout = math.prod(geom.O)
    axes = tuple(3 + i for i in lay.order)
    sfft = [lay.F[i] for i in lay.order]
    per_pair = lay.Oc * (2 * lay.M * csize + lay.P * fsize) + nout * (2 * fsize + (24 if img_cf is not None else 0))
    pairs = max(1, BLOCK_BYTES // (per_pair + 64))
    bk = min(K, pairs)
    per_image = lay.Sc * (lay.P * fsize + lay.M * csize) + (nout * 8 * 4 if img_cf is not None else 0)
    bn = max(1, min(N, pairs // bk, BLOCK_BYTES // max(1, per_image)))
    finish = _Finish(xp, geom, lay, ftype, reduce, ssd, out, values, flat_pos)
    FFh = FF.reshape(K, lay.sc, *lay.half)
    for n0 in range(0, N, bn):
        n1 = min(N, n0 + bn)
        FI = _image_spectra(xp, I[n0:n1], lay, ftype).reshape(n1 - n0, lay.Sc, *lay.half)
        var = None
        if img_cf is not None:
            var = window_variance(xp, img_cf[n0:n1], geom.s, geom.lo, list(geom.O))
        for k0 in range(0, K, bk):
            k1 = min(K, k0 + bk)
            prod = xp.zeros((n1 - n0, k1 - k0, lay.Oc, *lay.half), dtype=FF.dtype)
            for o in range(lay.Oc):
                for i in range(lay.sc):
                    c = o + lay.loc + i
                    if 0 <= c < lay.Sc:
                        prod[:, :, o] += FI[:, None, c] * FFh[None, k0:k1, i]
            r = xp.fft.irfftn(prod, s=sfft, axes=axes)
            del prod
            r = r[(slice(None),) * 3 + tuple(slice(0, n) for n in lay.O)]
            finish(finish.user_order(r), var, n0, n1, k0, k1)
            del r
            bar.update((n1 - n0) * (k1 - k0))
