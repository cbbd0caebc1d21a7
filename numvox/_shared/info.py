"""``numvox.info()``: what this installation can do."""

import importlib.util
import platform

EXTRAS = {
    "tf": ["tensorflow"],
    "gpu": ["cupy"],
    "dask": ["dask", "distributed"],
    "plot": ["matplotlib"],
    "fftw": ["pyfftw"],
    "nifti": ["nibabel"],
}


def _version(module_name):
    import importlib.metadata as md

    dist = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "cupy": ("cupy", "cupy-cuda12x", "cupy-cuda11x")}
    for name in dist.get(module_name, (module_name,)):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return "installed"


class Info(dict):
    """The report of :func:`info`: a dict whose ``repr`` and ``str`` are the readable table
    (so ``numvox.info()`` at a prompt shows it); ``dict(report)`` or ``json.dumps`` give the
    plain mapping."""

    def __str__(self):
        return format_info(self)

    __repr__ = __str__

    def _repr_pretty_(self, printer, cycle):  # IPython / Jupyter
        printer.text(str(self))


def info():
    """Report versions, threading, CUDA state, the Numba cache and importable extras.

    Returns
    -------
    Info
        A dict printed as a table, with keys ``numvox``, ``python``, ``platform``, ``numpy``,
        ``scipy``, ``numba``, ``threads``, ``threading_layer``, ``cuda`` (``"available"``,
        ``"simulated"`` or ``"unavailable"``), ``cuda_device``, ``numba_cache`` (where
        compiled kernels are stored, see :mod:`numvox._shared.compile`) and ``extras``
        (extra name → {package: version or None}).  Nothing heavy is imported: extras are
        looked up, not loaded.
    """
    import numba
    import numpy
    import scipy

    from .. import __version__
    from .backend import cuda_status
    from .compile import cache_location

    state, device = cuda_status()
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel function has run yet: ask by running a tiny one
        from ._probe import touch_parallel

        touch_parallel()
        layer = numba.threading_layer()
    extras = {
        extra: {m: (_version(m) if importlib.util.find_spec(m) else None) for m in modules}
        for extra, modules in EXTRAS.items()
    }
    try:
        cache = cache_location()
    except RuntimeError as exc:  # no writable cache folder: Numba cannot cache
        cache = f"none ({exc}); set NUMBA_CACHE_DIR"
    return Info({
        "numvox": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "threads": numba.get_num_threads(),
        "threading_layer": layer,
        "cuda": state,
        "cuda_device": device,
        "numba_cache": cache,
        "extras": extras,
    })


def format_info(report):
    """The report of :func:`info` as aligned ``key value`` lines, one per extra at the end."""
    lines = [f"{k:16s} {report[k]}" for k in report if k != "extras"]
    for extra, mods in report["extras"].items():
        found = ", ".join(f"{m} {v}" if v else f"{m} (missing)" for m, v in mods.items())
        lines.append(f"{'extra ' + extra:16s} {found}")
    return "\n".join(lines)
