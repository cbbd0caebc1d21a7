"""The in-memory path of :func:`numvox.correlate_batch`: conversion of the inputs, checks,
result buffers, and the branch between the FFT path (:mod:`._fft`), the CPU direct driver
(:mod:`._direct`) and the CUDA direct driver (:mod:`._cuda`).

The public function (:mod:`._api`) runs it for in-memory inputs, and the Dask driver
(:mod:`._dask`) runs it on every block, so that both compute exactly the same values.
"""

import math

import numpy as np

from numvox._shared.arrays import Call
from numvox._shared.halfprec import NATIVE, half_code, kernel_view
from numvox._shared.validate import check_real_dtype

from ._progress import progress_bar
from ._rules import canonical, check_options, choose_method, geometry, have_cupy, output_specs, split_out


def correlate_arrays(images, filters, *, mode="same", channel_axis=None, reduce=None, normalize=False,
                     method="auto", out=None, progress=False, backend=None):
    """:func:`numvox.correlate_batch` of arrays that are not Dask arrays (same contract)."""
    call = Call(backend, images=images, filters=filters)
    A, B = call["images"], call["filters"]
    mode, reduce, method = check_options(mode, reduce, method, normalize, progress, out)
    check_real_dtype(A, "images", allow_int=True)
    check_real_dtype(B, "filters", allow_int=True)
    geom = geometry(A.shape, B.shape, mode, channel_axis)
    specs = output_specs({"images": list(A.shape), "filters": list(B.shape)},
                         {"images": A.dtype, "filters": B.dtype},
                         {"mode": mode, "channel_axis": channel_axis, "reduce": reduce})
    out_dtype = specs[0][1]

    if reduce is None:
        res = call.output(out, *specs[0])
        values = positions = None
    else:
        out_v, out_p = split_out(out, reduce)
        values = call.output(out_v, *specs[0], name="out")
        positions = call.output(out_p, *specs[1], name="out positions") if reduce == "argmax" else None
        res = None

    def result():
        if reduce is None:
            return call.wrap(res)
        if reduce == "max":
            return call.wrap(values)
        return call.wrap((values, positions))

    if geom.N == 0 or geom.K == 0:
        return result()

    A, B = _as_float(A), _as_float(B)
    if method == "auto":
        method = choose_method(geom, call.device_arrays)
    elif method == "fft" and call.device_arrays and not have_cupy():  # pragma: no cover
        raise ImportError("method='fft' on CUDA needs CuPy (pip install 'numvox[gpu]'); use method='direct'")

    # The bar starts before the value scan, whose kernel may compile on a first call.
    bar = progress_bar(progress, geom.N * geom.K)
    try:
        _check_values(call, A, B, geom, out_dtype, normalize)
        if method == "fft":
            _run_fft(call, A, B, geom, out_dtype, reduce, normalize, res, values, positions, bar)
        elif call.backend == "cuda":
            from ._cuda import launch_direct

            launch_direct(call, A, B, geom, out_dtype, reduce, normalize, res, values, positions, bar)
        else:
            from ._direct import run_direct

            run_direct(A, B, geom, out_dtype, reduce, normalize, res, values, positions, bar)
    finally:
        bar.close()
    return result()


def _as_float(a):
    """Integer inputs as a float64 copy (kernels read float16/bfloat16/float32/float64 only)."""
    if half_code(a.dtype) != NATIVE or np.dtype(a.dtype).kind == "f":
        return a
    if isinstance(a, np.ndarray):
        return a.astype(np.float64)
    import cupy  # pragma: no cover - needs a GPU
    from numba import cuda  # pragma: no cover

    return cuda.as_cuda_array(cupy.asarray(a).astype(np.float64))  # pragma: no cover


def _check_values(call, A, B, geom, out_dtype, normalize):
    """Reject NaN / inf inputs and magnitudes whose sums could overflow ``out_dtype``."""
    for a, name in ((A, "images"), (B, "filters")):
        arr, code = kernel_view(canonical(a, geom))
        if call.device_arrays:  # pragma: no cover - needs a GPU
            from ._cuda import scan_values_device

            bad, big = scan_values_device(arr, code)
        else:
            from ._cpu import flat_view, scan_values

            flat, base, st = flat_view(arr)
            bad, big = scan_values(flat, np.int64(code), base, np.array(arr.shape, dtype=np.int64), st)
        if bad:
            raise ValueError(
                f"{name} contains {int(bad)} NaN or infinite value(s); correlations of non-finite "
                "values are undefined: clean or mask them first"
            )
        if name == "images":
            big_i = float(big)
        else:
            big_f = float(big)
    taps = geom.C * math.prod(geom.s)
    limit = float(np.finfo(out_dtype).max) / 16
    worst = big_i * big_f * taps
    if normalize:
        worst = max(worst, big_i * big_i * taps, big_f * big_f * taps)
    if not worst < limit:
        raise ValueError(
            f"values too large: |images| up to {big_i:.3g} and |filters| up to {big_f:.3g} over "
            f"{taps} taps could overflow {np.dtype(out_dtype).name} sums; rescale the inputs"
            + (" or pass float64 arrays" if out_dtype == np.float32 else "")
        )


def _run_fft(call, A, B, geom, out_dtype, reduce, normalize, res, values, positions, bar):
    from ._fft import correlate_fft

    if call.device_arrays:  # pragma: no cover - needs a GPU
        import cupy as xp

        A, B = xp.asarray(A), xp.asarray(B)
        res = None if res is None else xp.asarray(res)
    else:
        xp = np
    vals = flat = None
    if reduce is not None:
        vals = xp.asarray(values) if call.device_arrays else values
        flat = xp.empty((geom.N, geom.K), dtype=np.int64)
    correlate_fft(xp, A, B, geom, np.dtype(out_dtype).type, reduce, normalize, res, vals, flat, bar)
    if reduce == "argmax":
        pos = xp.stack(xp.unravel_index(flat, geom.O), axis=-1).astype(np.int64)
        if call.device_arrays:  # pragma: no cover - needs a GPU
            xp.asarray(positions)[...] = pos
        else:
            positions[...] = pos
