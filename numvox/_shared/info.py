"""``numvox.info()``: what this installation can do."""

import importlib.util
import platform

EXTRAS = {
    "tf": ["tensorflow"],
    "gpu": ["cupy"],
    "dask": ["dask", "distributed"],
    "plot": ["matplotlib"],
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


def info():
    """Report versions, threading, CUDA state and importable extras.

    Returns
    -------
    dict
        Keys ``numvox``, ``python``, ``numpy``, ``scipy``, ``numba``, ``threads``,
        ``threading_layer``, ``cuda`` (``"available"``, ``"simulated"`` or
        ``"unavailable"``), ``cuda_device`` and ``extras`` (extra name → {package: version
        or None}).  Nothing heavy is imported: extras are looked up, not loaded.
    """
    import numba
    import numpy
    import scipy

    from .. import __version__
    from .backend import cuda_status

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
    return {
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
        "extras": extras,
    }


def format_info(report):
    lines = [f"{k:16s} {report[k]}" for k in report if k != "extras"]
    for extra, mods in report["extras"].items():
        found = ", ".join(f"{m} {v}" if v else f"{m} (missing)" for m, v in mods.items())
        lines.append(f"{'extra ' + extra:16s} {found}")
    return "\n".join(lines)
