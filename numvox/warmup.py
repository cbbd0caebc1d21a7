"""Ahead-of-time compilation: each operation called once on a tiny input of one dtype.

Numba compiles a kernel for every combination of argument types it is called with and, with
``cache=True``, stores the machine code on disk (see :func:`numvox._shared.compile.cache_dir`).
Calling an operation on a small C-contiguous input of a dtype compiles (or loads) exactly the
specialisations a real call of that dtype uses, so ``numvox compile`` runs :func:`warm` for
each requested operation and dtype, one process each (:func:`numvox._shared.compile.run_warmups`).

Operations (:data:`OPS`) are the public function names; families (:data:`FAMILIES`) name
several at once.  Options that select a different compiled kernel (``splat``, ``border``,
``reduce``, ``normalize``) are each called once.
"""

import numpy as np

DTYPES = ("float16", "bfloat16", "float32", "float64")
DEFAULT_DTYPES = ("float32",)


def _rng():
    return np.random.default_rng(0)


def _votes(dtype, variants):
    from numvox.votes import aggregate_votes

    probs = _rng().random((6, 5, 4, 3)).astype(dtype)
    offsets = (_rng().random((6, 5, 4, 6)) - 0.5).astype(dtype)
    for splat in ("nearest", "linear")[: 2 if variants else 1]:
        aggregate_votes(probs, offsets, threshold=0.2, splat=splat, backend="cpu")


def _peaks(dtype, variants):
    from numvox.votes import heatmap_peaks

    heat = _rng().random((2, 6, 5, 4)).astype(dtype)
    heatmap_peaks(heat, backend="cpu")


def _labels(dtype, variants):
    from numvox.labels import descent_labels

    volume = _rng().random((6, 5, 4)).astype(dtype)
    for border in ("inside", "zero")[: 2 if variants else 1]:
        descent_labels(volume, border=border, backend="cpu")


def _basins(dtype, variants):
    from numvox.labels import descent_basins

    descent_basins(_rng().random((6, 5, 4)).astype(dtype), backend="cpu")


def _correlate(dtype, variants):
    from numvox.correlate import correlate_batch

    images = _rng().random((2, 8, 7, 6)).astype(dtype)
    filters = _rng().random((2, 3, 3, 3)).astype(dtype)
    for reduce, normalize in ((None, False), ("max", False), (None, True), ("max", True))[: 4 if variants else 1]:
        correlate_batch(images, filters, reduce=reduce, normalize=normalize, method="direct", backend="cpu")


def _pac_inputs(dtype):
    rng = _rng()
    x = rng.random((1, 4, 5, 6, 2)).astype(dtype)
    guide = rng.random((1, 4, 5, 6, 2)).astype(dtype)
    weight = rng.random((3, 3, 3, 2, 2)).astype(dtype)
    return x, guide, weight


def _pac(dtype, variants):
    from numvox.pac import pac_conv

    x, guide, weight = _pac_inputs(dtype)
    for normalize in (False, True)[: 2 if variants else 1]:
        pac_conv(x, guide, weight, np.zeros(2, dtype), normalize=normalize, backend="cpu")


def _pac_backward(dtype, variants):
    from numvox.pac import pac_conv_backward

    x, guide, weight = _pac_inputs(dtype)
    for normalize in (False, True)[: 2 if variants else 1]:
        pac_conv_backward(np.ones_like(x), x, guide, weight, normalize=normalize, backend="cpu")


#: operation name -> function(dtype, variants) calling it on a tiny input (CPU kernels): with
#: the default options only, or (``variants``) once per option value that selects other kernels
OPS = {
    "aggregate_votes": _votes,
    "heatmap_peaks": _peaks,
    "descent_labels": _labels,
    "descent_basins": _basins,
    "correlate_batch": _correlate,
    "pac_conv": _pac,
    "pac_conv_backward": _pac_backward,
}

#: family name -> its operations
FAMILIES = {
    "votes": ("aggregate_votes", "heatmap_peaks"),
    "labels": ("descent_labels", "descent_basins"),
    "correlate": ("correlate_batch",),
    "pac": ("pac_conv", "pac_conv_backward"),
}


#: the operations by cold compile time, slowest first (benchmarks/bench_compile.py): the order
#: in which ``numvox compile`` starts them, so that the slowest do not finish last alone
SLOWEST_FIRST = ("pac_conv_backward", "descent_basins", "pac_conv", "descent_labels", "correlate_batch",
                 "aggregate_votes", "heatmap_peaks")


def numpy_dtype(name):
    """The NumPy dtype called ``name`` (bfloat16 from ``ml_dtypes``, installed with TensorFlow)."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise ImportError("bfloat16 needs the ml_dtypes package (installed with TensorFlow)") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def expand(names):
    """Operation names for ``names`` (operations or families; all operations when empty).

    Raises
    ------
    ValueError
        Naming the unknown entries and the known names.
    """
    if not names:
        return list(OPS)
    out, unknown = [], []
    for name in names:
        for op in FAMILIES.get(name, (name,)):
            if op not in OPS:
                unknown.append(name)
            elif op not in out:
                out.append(op)
    if unknown:
        raise ValueError(f"unknown operation(s) {unknown}; choose from {list(OPS)} or families {list(FAMILIES)}")
    return out


def warm(op, dtype, variants=True):
    """Compile (or load from the cache) the CPU kernels ``op`` uses for ``dtype``: those of
    every option value that selects its own kernels, or (``variants=False``) those of a call
    with the default options only (what a first call costs)."""
    OPS[op](numpy_dtype(dtype), variants)
