"""CPU driver of the direct (sliding-window) path: blocks, normalisation statistics, reductions.

The kernel (``_cpu.direct``) works on canonical 6-D views; this module cuts the image batch
into blocks so that the extra memory (normalisation statistics, per-chunk partial maxima)
stays below ``DIRECT_BLOCK_BYTES`` whatever N x K, and combines partial maxima into
``(values, positions)`` (first occurrence in C order on ties; the CUDA driver combines its
per-tile maxima with the same :func:`combine_partials`).
"""

import math

import numpy as np
from numba import get_num_threads

from numvox._shared.halfprec import kernel_view

from ._cpu import direct, flat_view
from ._normalize import centred_filters, window_variance
from ._rules import BIG_INDEX, canonical, channels_first, pad4

DIRECT_BLOCK_BYTES = 64 * 2**20


def combine_partials(pval, pidx):
    """Max over the last axis; the smallest flat index among the maxima."""
    vmax = pval.max(axis=-1)
    idx = np.where(pval == vmax[..., None], pidx, BIG_INDEX).min(axis=-1)
    return vmax, idx


def run_direct(A, B, geom, out_dtype, reduce, normalize, res, values, positions, bar):
    """Direct correlation of NumPy inputs on the CPU: fill ``res`` (reduce None) or
    ``values`` and ``positions`` (reduce "max" / "argmax"; ``positions`` None for "max")."""
    N, K = geom.N, geom.K
    O, lo, s = geom.O, geom.lo, geom.s
    O4 = pad4(O, 1)
    lo4 = np.array(pad4(lo, 0), dtype=np.int64)
    nout = math.prod(O)
    eps = float(np.finfo(out_dtype).eps)

    ssd = np.ones(1, dtype=np.float64)
    img_cf = None
    if normalize:
        # zero-mean filters (a small copy of the filter bank) and their sums of squares
        B, ssd = centred_filters(np, B, out_dtype)
        img_cf = channels_first(np, A, geom)
    img6, icode = kernel_view(canonical(A, geom))

    flt6 = np.array(canonical(B, geom), dtype=out_dtype, order="C")  # small: the filter bank
    flat, base, ist = flat_view(img6)
    ishape = np.array(img6.shape, dtype=np.int64)

    threads = get_num_threads()
    O3 = O4[3]
    R = O4[0] * O4[1] * O4[2]
    kb = int(max(1, min(K, 64, 8192 // max(1, O3))))
    nkb = -(-K // kb)
    oshape = np.array(O4, dtype=np.int64)

    # image block size
    per_image = 0
    if normalize:
        per_image += nout * 8 * 4
    if reduce is not None:
        per_image += K * 16 * max(1, min(R, 64))
    bn = N if per_image == 0 else max(1, min(N, DIRECT_BLOCK_BYTES // per_image))
    if bar.__class__.__name__ != "_Null":
        bn = max(1, min(bn, -(-N // 50)))  # ~50 progress updates

    dummy_var = np.zeros((1, 1, 1, 1, 1), dtype=np.float64)
    dummy_out = np.zeros((1,) * 6, dtype=out_dtype)
    dummy_pv = np.zeros((1, 1, 1), dtype=out_dtype)
    dummy_pi = np.zeros((1, 1, 1), dtype=np.int64)
    out6 = res.reshape(N, K, *O4) if reduce is None else None

    for n0 in range(0, N, bn):
        n1 = min(N, n0 + bn)
        b = n1 - n0
        if reduce is None:
            nchunk = min(R, max(1, -(-8 * threads // (nkb * b))))  # tasks for load balance
        else:
            nchunk = min(R, 64, max(1, -(-4 * threads // (nkb * b))))
        rows_per_chunk = -(-R // nchunk)
        nchunk = -(-R // rows_per_chunk)
        if normalize:
            var = window_variance(np, img_cf[n0:n1], s, lo, O).reshape(b, *O4)
        else:
            var = dummy_var
        if reduce is None:
            o, pv, pi = out6[n0:n1], dummy_pv, dummy_pi
        else:
            o = dummy_out
            pv = np.empty((b, K, nchunk), dtype=out_dtype)
            pi = np.empty((b, K, nchunk), dtype=np.int64)
        direct(flat, np.int64(icode), base + n0 * ist[0], np.array([b, *ishape[1:]], dtype=np.int64), ist,
               flt6, lo4, oshape, np.int64(kb),
               np.int64(rows_per_chunk), np.int64(nchunk), o, pv, pi, np.int64(reduce is not None), var, ssd,
               np.int64(normalize), np.float64(eps))
        if reduce is not None:
            v, idx = combine_partials(pv, pi)
            values[n0:n1] = v
            if positions is not None:
                positions[n0:n1] = np.stack(np.unravel_index(idx, tuple(O)), axis=-1)
        bar.update(b * K)

