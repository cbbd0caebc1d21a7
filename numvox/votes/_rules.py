"""The votes family's rules, written once: option values, input checks and output shapes,
used by the in-memory functions (:mod:`numvox.votes._api`), the Dask driver
(:mod:`numvox.votes._dask`) and, through ``OPS``, the framework wrappers."""

import numpy as np

from .._shared.validate import check_ndim, check_real_dtype

SPLATS = ("nearest", "linear")
LAYOUTS = ("axis-major", "landmark-major")


def check_vote_inputs(P, O):
    """Check ``probs`` / ``offsets`` shapes and dtypes; return the number of landmarks ``L``."""
    check_real_dtype(P, "probs")
    check_real_dtype(O, "offsets")
    check_ndim(P, "probs", (4, 5), "(X, Y, Z, L+1) or (B, X, Y, Z, L+1)")
    if len(O.shape) != len(P.shape):
        raise ValueError(
            f"offsets has shape {tuple(O.shape)} but probs has shape {tuple(P.shape)}; "
            "both must be (X, Y, Z, C) or both (B, X, Y, Z, C)"
        )
    if tuple(O.shape[:-1]) != tuple(P.shape[:-1]):
        raise ValueError(
            f"probs and offsets must agree in all but the channel axis: probs has "
            f"{tuple(P.shape)}, offsets has {tuple(O.shape)}"
        )
    C = int(P.shape[-1])
    if C < 2:
        raise ValueError(
            f"probs has {C} channel(s) (shape {tuple(P.shape)}); expected L+1 >= 2 "
            "(background + at least one landmark)"
        )
    L = C - 1
    if int(O.shape[-1]) != 3 * L:
        raise ValueError(
            f"offsets has {O.shape[-1]} channels (shape {tuple(O.shape)}); expected 3*L = {3 * L} "
            f"for the L = {L} landmarks of probs"
        )
    return L


def votes_output_specs(shapes, dtypes, options):
    """``aggregate_votes``: heatmaps ``(..., L, X, Y, Z)`` float32 from probs ``(..., X, Y, Z,
    L+1)`` (see :class:`numvox._shared.ops.OpSpec` for the arguments)."""
    p = shapes["probs"]
    if p is None:
        return [(None, np.float32)]
    c = p[-1]
    n_lm = None if c is None else c - 1
    return [(p[:-4] + [n_lm] + p[-4:-1], np.float32)]


def peaks_output_specs(shapes, dtypes, options):
    """``heatmap_peaks``: coordinates ``(..., L, 3)`` and values ``(..., L)``, float64, from
    heatmaps ``(..., L, X, Y, Z)``."""
    h = shapes["heatmaps"]
    if h is None:
        return [(None, np.float64), (None, np.float64)]
    lead = h[:-3]
    return [(lead + [3], np.float64), (lead, np.float64)]


def known_shape(a):
    """The shape of a concrete array as the list of ints the output rules take."""
    return [int(s) for s in a.shape]
