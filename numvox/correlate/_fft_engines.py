"""Inverse-transform engines of the CPU FFT path: SciPy (``scipy.fft``, the default) and FFTW
(``pyfftw``, the optional ``fftw`` extra, used when it is installed).

An engine owns one input buffer of spectra products ``(G, Oc, *half)`` and turns it into the
real correlation maps with a *pruned* inverse transform: complex inverse transforms along all
but the real axis, one axis at a time, each result cut to the kept outputs before the next,
and the complex-to-real transform last, only on the kept lines.  Inverse transforms are
not scaled (FFTW's plans never scale; SciPy is asked not to): the caller folds ``1 / prod(F)``
into the filter spectra once.  Each worker thread of
:mod:`._fft` holds its own engine and runs it single-threaded on a task small enough to stay
in the core's cache, so that the products, the transforms and the reduction of a task touch
memory once.

FFTW plans are made once per buffer shape (``FFTW_MEASURE`` for large calls, where the ~0.1-1 s
of measuring is repaid, ``FFTW_ESTIMATE`` otherwise) and kept with their buffers in a small
pool reused by later calls.  pyFFTW is GPL-licensed, so it is never a hard dependency: it is
imported only here, only when chosen.  ``NUMVOX_FFT=scipy|fftw|auto`` (default ``auto``: FFTW
when importable) picks the engine.
"""

import collections
import os
import threading

import numpy as np

ENV_VAR = "NUMVOX_FFT"
ENGINES = ("auto", "scipy", "fftw")
MEASURE_POINTS = 2e8  # transformed points per call from which FFTW_MEASURE planning pays off
POOL_KEYS = 8  # buffer shapes whose engines stay pooled between calls

_LOCK = threading.Lock()  # FFTW's planner is not thread-safe; the pool is shared
_POOL = collections.OrderedDict()


def have_pyfftw():
    """Whether the optional ``pyfftw`` package is importable (nothing is imported)."""
    import importlib.util

    return importlib.util.find_spec("pyfftw") is not None


def engine_name():
    """The engine the CPU FFT path uses now: ``"scipy"`` or ``"fftw"``.

    From ``NUMVOX_FFT`` (``auto`` when unset: ``"fftw"`` where pyFFTW is importable, else
    ``"scipy"``); ``NUMVOX_FFT=fftw`` without pyFFTW raises ImportError, other values
    ValueError.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in ENGINES:
        raise ValueError(f"environment variable {ENV_VAR}={os.environ[ENV_VAR]!r} is not understood; "
                         f"expected one of {ENGINES}")
    if value == "auto":
        return "fftw" if have_pyfftw() else "scipy"
    if value == "fftw" and not have_pyfftw():
        raise ImportError(f"{ENV_VAR}=fftw needs pyFFTW (pip install 'numvox[fftw]'; GPL-licensed)")
    return value


def _cut(ndim, axis, keep):
    index = [slice(None)] * ndim
    index[axis] = slice(0, keep)
    return tuple(index)


class ScipyInverse:
    """Pruned inverse transform with ``scipy.fft`` (one thread: the caller's threads run
    engines side by side).  ``run()`` returns the output, uncut along the real axis."""

    def __init__(self, shape, ctype, sfft, axes, keep):
        self.input = np.zeros(shape, dtype=ctype)
        self.sfft, self.axes, self.keep = sfft, axes, keep

    def run(self):
        import scipy.fft

        x, own = self.input, False
        for ax, n, k in zip(self.axes[:-1], self.sfft[:-1], self.keep[:-1]):
            x = scipy.fft.ifft(x, n=n, axis=ax, norm="forward", overwrite_x=own, workers=1)
            x = x[_cut(x.ndim, ax, k)]
            own = True
        return scipy.fft.irfft(x, n=self.sfft[-1], axis=self.axes[-1], norm="forward", overwrite_x=own, workers=1)


class FftwInverse:
    """Pruned inverse transform with FFTW plans on fixed aligned buffers: in-place complex
    steps on ever smaller views of ``input``, then complex-to-real into ``output``.  ``run()``
    returns ``output``, uncut along the real axis; ``input`` is overwritten."""

    def __init__(self, shape, ctype, sfft, axes, keep, flag):
        import pyfftw

        ftype = np.float32 if np.dtype(ctype) == np.complex64 else np.float64
        self.input = pyfftw.empty_aligned(shape, dtype=ctype)
        view = self.input
        self._plans = []
        for ax, k in zip(axes[:-1], keep[:-1]):
            self._plans.append(pyfftw.FFTW(view, view, axes=(ax,), direction="FFTW_BACKWARD",
                                           flags=(flag,), threads=1))
            view = view[_cut(view.ndim, ax, k)]
        out_shape = list(view.shape)
        out_shape[axes[-1]] = sfft[-1]
        self.output = pyfftw.empty_aligned(tuple(out_shape), dtype=ftype)
        self._plans.append(pyfftw.FFTW(view, self.output, axes=(axes[-1],), direction="FFTW_BACKWARD",
                                       flags=(flag, "FFTW_DESTROY_INPUT"), threads=1))
        self.input[...] = 0  # planning wrote to the buffers; unused task slots stay finite

    def run(self):
        for plan in self._plans:
            plan.execute()
        return self.output


def acquire(name, count, shape, ctype, sfft, axes, keep, points):
    """``count`` engines for buffers of ``shape``, taken from the pool or made (planned once).

    ``points``: transformed points of the whole call, which decides FFTW's planning effort.
    Give them back with :func:`release`.
    """
    flag = "FFTW_MEASURE" if points >= MEASURE_POINTS else "FFTW_ESTIMATE"
    key = (name, flag, tuple(shape), np.dtype(ctype).str, tuple(sfft), tuple(axes), tuple(keep))
    with _LOCK:
        free = _POOL.pop(key, [])
        taken = [free.pop() for _ in range(min(count, len(free)))]
        if free:
            _POOL[key] = free
        while len(taken) < count:
            if name == "fftw":
                taken.append(FftwInverse(shape, ctype, sfft, axes, keep, flag))
            else:
                taken.append(ScipyInverse(shape, ctype, sfft, axes, keep))
    return key, taken


def release(key, engines):
    """Return engines to the pool (the least recently used shapes beyond ``POOL_KEYS`` go)."""
    with _LOCK:
        _POOL.setdefault(key, []).extend(engines)
        _POOL.move_to_end(key)
        while len(_POOL) > POOL_KEYS:
            _POOL.popitem(last=False)
