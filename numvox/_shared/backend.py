"""Backend choice: which kernels (CPU or CUDA) a call runs on.

``backend=None`` means "where the data lives": host memory runs the CPU kernels, device
memory the CUDA kernels.  ``"cpu"`` and ``"cuda"`` force a backend (data is copied across
only then).  The environment variable ``NUMVOX_BACKEND`` (``cpu`` or ``cuda``) replaces the
``None`` default.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) ``backend="cuda"`` runs the CUDA
kernels, in Python, on host arrays: that is how the CUDA kernels are tested on machines
without a GPU.  ``backend=None`` never picks the simulator.

Nothing here imports ``numba.cuda`` until a CUDA question is actually asked.
"""

import functools
import os

BACKENDS = ("cpu", "cuda")
ENV_VAR = "NUMVOX_BACKEND"


class CudaUnavailableError(RuntimeError):
    """``backend="cuda"`` was asked for on a machine where no CUDA GPU can be used."""

    # The plain Exception constructor: TensorFlow's autograph re-raises errors from traced
    # code with this type (not as a generic StagingError) only when it can rebuild them from
    # a message alone, so forcing CUDA inside tf.function raises this very error.
    __init__ = Exception.__init__


def cuda_simulated():
    """True when Numba's CUDA simulator is enabled (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=1)
def cuda_status():
    """Return ``(state, device_name)``; state is ``"simulated"``, ``"available"`` or ``"unavailable"``.

    The answer is computed once per process.  Asking it imports ``numba.cuda`` (and, where a
    driver exists, initialises it); ``backend=None`` on host data never asks.
    """
    if cuda_simulated():
        return "simulated", "Numba CUDA simulator"
    try:
        from numba import cuda

        if not cuda.is_available():
            return "unavailable", None
        name = cuda.get_current_device().name
        return "available", name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:  # a broken driver install must not crash the caller
        return "unavailable", f"{type(exc).__name__}: {exc}"


def cuda_usable():
    """True when CUDA kernels can run here (a real GPU, or the simulator)."""
    return cuda_status()[0] != "unavailable"


def default_backend():
    """The backend named by ``NUMVOX_BACKEND``, or None (follow the data)."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return None
    if value not in BACKENDS:
        raise ValueError(
            f"environment variable {ENV_VAR}={os.environ[ENV_VAR]!r} is not understood; "
            f"expected one of {BACKENDS} or unset"
        )
    return value


def resolve_backend(backend, on_device):
    """Choose ``"cpu"`` or ``"cuda"`` for a call.

    Parameters
    ----------
    backend : {None, "cpu", "cuda"}
        What the caller asked for.
    on_device : bool
        Whether any input already lives in GPU memory.
    """
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"backend must be None, 'cpu' or 'cuda'; got {type(backend).__name__}")
    requested = backend.lower() if isinstance(backend, str) else default_backend()
    if requested is None:
        return "cuda" if on_device else "cpu"
    if requested not in BACKENDS:
        raise ValueError(f"backend must be None, 'cpu' or 'cuda'; got {backend!r}")
    if requested == "cuda" and not cuda_usable():
        detail = cuda_status()[1]
        raise CudaUnavailableError(
            "backend='cuda' was requested but no CUDA GPU is usable here"
            + (f" ({detail})" if detail else "")
            + "; use backend='cpu' (or None), or set NUMBA_ENABLE_CUDASIM=1 to run the CUDA "
            "kernels in Numba's simulator"
        )
    return requested
