"""Harness self-check: a trivial Numba reduction against ``numpy.sum``.

It shows the harness's columns on a problem whose answer is known: both sides read the
same 256 MiB once, so the speed-up should be close to 1 and neither side needs extra memory.
"""

import numpy as np

from ._harness import Baseline, Case

SECTION = "Harness self-check"
NOTES = (
    "Both sides stream the same array once and need no extra memory.  NumPy's pairwise sum is "
    "SIMD-vectorised, while Numba keeps strict IEEE order in a plain reduction loop (no "
    "`fastmath`), so a ratio somewhat below 1× is the expected answer here."
)


def cases(quick, backend):
    from numvox._shared._probe import _sum

    a = np.random.default_rng(0).random((1 << 22) if quick else (1 << 25))
    yield Case(
        f"sum of {a.nbytes >> 20} MiB float64",
        numvox=lambda: _sum(a),
        baselines=[Baseline("numpy.sum", lambda: a.sum(), repeat=5)],
    )
