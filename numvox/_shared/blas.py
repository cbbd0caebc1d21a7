"""Keep OpenBLAS single-threaded while parallel Numba kernels call it.

The PAC kernels call ``np.dot`` (SciPy's BLAS) from inside ``prange`` loops, once per block
of windows.  OpenBLAS starts its own threads for a product above ~256 k multiply-adds (e.g.
32 windows x 576 taps x 64 channels), so with every Numba thread doing that the cores are
oversubscribed: on the 2-core development machine a C = O = 64 PAC ran 2-2.5x slower
than with BLAS on one thread.  :func:`single_threaded_blas` sets every loaded OpenBLAS to
one thread for the duration of a kernel call and restores its setting afterwards (for
the whole process: BLAS calls made meanwhile by other Python threads run on one thread
too).  It finds the libraries in ``/proc/self/maps`` (Linux) and does nothing elsewhere or
when no OpenBLAS is loaded (MKL and Accelerate are left alone).
"""

import contextlib
import ctypes
import re
import threading

# (set, get) symbol pairs: plain OpenBLAS and the prefixed builds in NumPy / SciPy wheels
_SYMBOLS = (
    ("openblas_set_num_threads", "openblas_get_num_threads"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
)
_LOCK = threading.Lock()
_controls = None
_depth = 0
_saved = []


def _find_controls():
    """``[(set, get)]`` for every OpenBLAS mapped into the process."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba's np.dot calls: load it now)
    except ImportError:  # pragma: no cover - SciPy is a core dependency
        pass
    try:
        with open("/proc/self/maps") as f:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())))
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                found.append((setter, getter))
                break
    return found


@contextlib.contextmanager
def single_threaded_blas():
    """Run the ``with`` block with every loaded OpenBLAS on one thread (re-entrant and
    thread-safe: the first entry saves the settings, the last exit restores them)."""
    global _controls, _depth, _saved
    with _LOCK:
        if not _controls:  # found once the BLAS is loaded (by the kernels' first compile)
            _controls = _find_controls()
        if _depth == 0:
            _saved = [(setter, getter()) for setter, getter in _controls]
            for setter, _ in _saved:
                setter(1)
        _depth += 1
    try:
        yield
    finally:
        with _LOCK:
            _depth -= 1
            if _depth == 0:
                for setter, n in _saved:
                    setter(n)
                _saved = []
