"""The in-memory drivers: one array (NumPy, CuPy, TensorFlow, ``__cuda_array_interface__``)
through the CPU (:mod:`._cpu`) or CUDA (:mod:`._cuda`, imported lazily) kernels, the result in
the caller's library.  The public functions run them for in-memory inputs, and the Dask
driver runs them on the haloed chunks that are not NumPy or go to CUDA."""

import numpy as np

from numvox._shared.arrays import Call, to_host

from ._cpu import basins_from_labels_cpu, run_labels_cpu, zero_true_faces
from ._rules import (
    as_float,
    basins_output_specs,
    check_basin_voxels,
    check_volume,
    kernel_input,
    labels_output_specs,
    nonfinite_error,
    output_of,
)


def _labels_into(call, Vk, code, cdtype, res):
    """Labels of the kernel view ``Vk`` into ``res`` (both on the call's backend)."""
    if call.backend == "cpu":
        run_labels_cpu(Vk, code, res, [0, 0, 0], list(res.shape), cdtype)
        return
    from ._cuda import launch_labels

    bad = launch_labels(Vk, code, res, cdtype, device_arrays=call.device_arrays)
    if bad:
        raise nonfinite_error(as_float(to_host(Vk), code), "volume", bad)


def labels_in_memory(volume, border, out, backend):
    """:func:`numvox.descent_labels` of an in-memory volume (``border`` already checked)."""
    call = Call(backend, volume=volume)
    V = call["volume"]
    check_volume(V)
    shape, dtype = output_of(labels_output_specs, V, {"border": border})
    res = call.output(out, shape, dtype)
    if res.size == 0:
        return call.wrap(res)
    Vk, code, cdtype = kernel_input(volume, V)
    _labels_into(call, Vk, code, cdtype, res)
    if border == "zero":
        if call.device_arrays:  # pragma: no cover - needs a GPU
            from ._cuda import zero_faces

            zero_faces(res)
        else:
            zero_true_faces(res, ((True, True),) * 3)
    return call.wrap(res)


def basins_in_memory(volume, backend):
    """:func:`numvox.descent_basins` of an in-memory volume."""
    call = Call(backend, volume=volume)
    V = call["volume"]
    check_volume(V)
    shape, dtype = output_of(basins_output_specs, V, {})
    n = int(np.prod(shape))
    check_basin_voxels(n)
    res = call.output(None, shape, dtype)
    if n == 0:
        return call.wrap(res)
    Vk, code, cdtype = kernel_input(volume, V)
    if call.backend == "cpu":
        labels = np.empty(shape, np.uint8)
        _labels_into(call, Vk, code, cdtype, labels)
        basins_from_labels_cpu(labels, res)
    else:
        from ._cuda import launch_basins

        labels = call.empty(shape, np.uint8)
        _labels_into(call, Vk, code, cdtype, labels)
        launch_basins(labels, res, device_arrays=call.device_arrays)
    return call.wrap(res)
