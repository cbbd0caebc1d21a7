"""Shared test fixtures.

``backend`` runs a test once per backend.  The ``cuda`` case carries the ``cuda`` marker: it
runs on a real GPU, or under Numba's CUDA simulator in the second pytest invocation of the
README's test command (``NUMBA_ENABLE_CUDASIM=1 pytest -m cuda``), and is skipped otherwise.
Under the simulator kernels run as Python threads: keep CUDA test inputs small
(``SIMULATED`` tells a test to shrink them).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"

settings.register_profile(
    "numvox",
    deadline=None,  # first calls compile (or load cached) Numba kernels
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "numvox-sim",
    parent=settings.get_profile("numvox"),
    max_examples=6,
)
settings.load_profile("numvox-sim" if SIMULATED else "numvox")


def _require_cuda():
    from numvox._shared.backend import cuda_usable

    if not cuda_usable():
        pytest.skip("no CUDA GPU here; run with NUMBA_ENABLE_CUDASIM=1 to test the CUDA kernels")


@pytest.fixture(params=[pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)])
def backend(request):
    """``"cpu"`` or ``"cuda"``; the ``cuda`` case skips where CUDA kernels cannot run."""
    if request.param == "cuda":
        _require_cuda()
    return request.param


@pytest.fixture
def cuda_backend():
    """For tests that only make sense on CUDA; mark them ``@pytest.mark.cuda`` too."""
    _require_cuda()
    return "cuda"


@pytest.fixture
def repo_benchmarks(monkeypatch):
    """The repository's ``benchmarks`` package importable (it is not installed): the test
    imports it by name; sys.path is restored afterwards."""
    monkeypatch.syspath_prepend(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
