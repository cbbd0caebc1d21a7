"""The shared array/backend layer: kinds, zero-copy conversion, backend choice, outputs."""

import numpy as np
import pytest

from numvox._shared import arrays
from numvox._shared import backend as nvbackend
from numvox._shared.arrays import Call, kind_of
from numvox._shared.backend import CudaUnavailableError, resolve_backend


def _ptr(a):
    return a.__array_interface__["data"][0]


# -- NumPy --------------------------------------------------------------------------------
def test_numpy_input_is_used_without_copy():
    x = np.arange(24.0).reshape(2, 3, 4)[:, ::2]  # a strided view
    call = Call(None, x=x)
    assert call.backend == "cpu"
    assert call["x"] is x


def test_numpy_result_round_trip_and_none_arrays():
    x = np.ones((2, 2), np.float32)
    call = Call(None, optional=("maybe",), x=x, maybe=None)
    assert call["maybe"] is None
    with pytest.raises(TypeError, match="maybe is None"):  # only declared optional arrays may be None
        Call(None, x=x, maybe=None)
    res = call.output(None, (2, 2), np.float64)
    assert isinstance(call.wrap(res), np.ndarray) and call.wrap(res) is res
    assert call.wrap((res, None, 3)) == (res, None, 3)


def test_sequences_are_accepted_as_numpy():
    call = Call(None, x=[[1.0, 2.0]])
    assert isinstance(call["x"], np.ndarray) and call["x"].shape == (1, 2)


def test_unknown_objects_are_rejected_with_type_name():
    with pytest.raises(TypeError, match="got object"):
        kind_of(object())


def test_call_needs_an_array():
    with pytest.raises(ValueError, match="no array"):
        Call(None, optional=("x",), x=None)
    with pytest.raises(TypeError, match="x is None"):
        Call(None, x=None)


# -- outputs --------------------------------------------------------------------------------
def test_out_is_used_in_place_and_returned_as_itself():
    x = np.zeros(3)
    out = np.full((2, 3), 7.0, np.float32)
    call = Call(None, x=x)
    buf = call.output(out, (2, 3), np.float32, zero=True)
    assert buf is out and not out.any()
    assert call.wrap(buf) is out


@pytest.mark.parametrize(
    "out, match",
    [
        (np.zeros((3, 2), np.float32), "shape"),
        (np.zeros((2, 3), np.float64), "dtype"),
        (np.zeros((3, 2), np.float32).T, "C-contiguous"),
    ],
)
def test_bad_out_is_rejected(out, match):
    call = Call(None, x=np.zeros(3))
    with pytest.raises(ValueError, match=match):
        call.output(out, (2, 3), np.float32)


def test_read_only_out_is_rejected():
    out = np.zeros((2, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        Call(None, x=np.zeros(3)).output(out, (2, 3), np.float32)


# -- backend choice -----------------------------------------------------------------------
@pytest.fixture
def no_cuda(monkeypatch):
    """Pretend this machine has no usable CUDA, whatever it has."""
    monkeypatch.setattr(nvbackend, "cuda_status", lambda: ("unavailable", None))
    monkeypatch.delenv(nvbackend.ENV_VAR, raising=False)


def test_backend_none_follows_the_data(no_cuda):
    assert resolve_backend(None, on_device=False) == "cpu"
    assert resolve_backend(None, on_device=True) == "cuda"


def test_forced_cuda_without_gpu_is_a_clear_error(no_cuda):
    with pytest.raises(CudaUnavailableError, match="backend='cuda'.*NUMBA_ENABLE_CUDASIM"):
        Call("cuda", x=np.zeros(3))
    assert Call("cpu", x=np.zeros(3)).backend == "cpu"
    assert Call("CPU", x=np.zeros(3)).backend == "cpu"


def test_environment_variable_sets_the_default(no_cuda, monkeypatch):
    monkeypatch.setenv("NUMVOX_BACKEND", "cpu")
    assert Call(None, x=np.zeros(3)).backend == "cpu"
    monkeypatch.setenv("NUMVOX_BACKEND", "cuda")
    with pytest.raises(CudaUnavailableError):
        Call(None, x=np.zeros(3))
    assert Call("cpu", x=np.zeros(3)).backend == "cpu"  # an explicit choice wins
    monkeypatch.setenv("NUMVOX_BACKEND", "tpu")
    with pytest.raises(ValueError, match="NUMVOX_BACKEND='tpu'"):
        Call(None, x=np.zeros(3))


@pytest.mark.parametrize("bad, exc", [("gpu", ValueError), (1, TypeError)])
def test_bad_backend_values(bad, exc):
    with pytest.raises(exc, match="backend must be"):
        Call(bad, x=np.zeros(3))


@pytest.mark.cuda
def test_simulator_runs_cuda_on_host_arrays(cuda_backend):
    from numvox._shared.backend import cuda_simulated

    x = np.arange(5.0)
    call = Call(cuda_backend, x=x)
    assert call.backend == "cuda"
    if cuda_simulated():
        assert not call.device_arrays and call["x"] is x
    assert Call(None, x=x).backend == "cpu"  # None never picks the simulator for host data


# -- TensorFlow (DLPack) ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def test_tensorflow_cpu_tensor_is_read_without_copy(tf):
    t = tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4))
    call = Call(None, t=t)
    assert kind_of(t) == "tensorflow" and call.backend == "cpu"
    view = call["t"]
    assert isinstance(view, np.ndarray)
    assert _ptr(view) == _ptr(np.from_dlpack(t))  # the tensor's own buffer
    assert not view.flags.writeable  # DLPack imports are read-only: kernels must not write


def test_tensorflow_result_round_trip_without_copy(tf):
    t = tf.constant(np.ones((2, 3), np.float16))
    call = Call(None, t=t)
    res = call.output(None, (2, 3), np.float32)
    res[...] = 5
    out = call.wrap(res)
    assert isinstance(out, tf.Tensor) and out.dtype == tf.float32
    assert _ptr(np.from_dlpack(out)) == _ptr(res)  # the result went out through DLPack
    np.testing.assert_array_equal(out.numpy(), res)


def test_tensorflow_bfloat16_round_trip(tf):
    t = tf.constant([[1.5, -2.0, 3.0]], dtype=tf.bfloat16)
    call = Call(None, t=t)
    assert call["t"].dtype.name == "bfloat16"
    np.testing.assert_array_equal(call["t"].astype(np.float32), [[1.5, -2.0, 3.0]])
    back = call.wrap(call["t"].copy())
    assert back.dtype == tf.bfloat16
    np.testing.assert_array_equal(tf.cast(back, tf.float32).numpy(), [[1.5, -2.0, 3.0]])


def test_tensorflow_out_is_rejected(tf):
    call = Call(None, t=np.zeros(3))
    with pytest.raises(TypeError, match="TensorFlow"):
        call.output(tf.zeros((3,)), (3,), np.float64)


def test_results_follow_the_first_array(tf):
    call = Call(None, a=np.zeros(2), b=tf.zeros((2,)))
    assert isinstance(call.wrap(np.ones(2)), np.ndarray)
    call = Call(None, b=tf.zeros((2,)), a=np.zeros(2))
    assert isinstance(call.wrap(np.ones(2)), tf.Tensor)


def test_generic_host_dlpack_object_is_read_without_copy():
    base = np.arange(6.0)

    class Producer:  # a minimal DLPack producer on the host (like torch/JAX CPU tensors)
        def __dlpack__(self, **kwargs):
            return base.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return base.__dlpack_device__()

    call = Call(None, p=Producer())
    assert kind_of(Producer()) == "dlpack"
    assert _ptr(call["p"]) == _ptr(base)
    assert isinstance(call.wrap(call.output(None, (1,), np.float32)), np.ndarray)


def test_is_dask_does_not_import_dask():
    assert not arrays.is_dask(np.zeros(2))


def test_outputs_are_aligned_for_tensorflow():
    call = Call(None, x=np.zeros(3))
    for shape, dtype in [((3,), np.float32), ((2, 5, 7), np.uint8), ((0, 4), np.float64)]:
        buf = call.output(None, shape, dtype)
        assert buf.shape == shape and buf.dtype == dtype and buf.flags.c_contiguous
        assert buf.size == 0 or buf.__array_interface__["data"][0] % arrays.TF_ALIGN == 0
        assert not call.output(None, shape, dtype, zero=True).any()


def test_misaligned_results_reach_tensorflow_as_a_safe_copy(tf):
    # TensorFlow aborts the process when an op reads a misaligned DLPack buffer: such
    # results must be copied, never shared.
    raw = np.zeros(80, np.uint8)
    start = (-raw.__array_interface__["data"][0]) % 64 + 4
    misaligned = raw[start : start + 16].view(np.float32)
    misaligned[:] = [1, 2, 3, 4]
    call = Call(None, t=tf.zeros((4,)))
    out = call.wrap(misaligned)
    np.testing.assert_array_equal(tf.cast(out * 2, tf.float64).numpy(), [2, 4, 6, 8])
    bf = call.wrap(misaligned.view(np.uint16).view(arrays.bfloat16_dtype()))
    assert tf.cast(bf, tf.float32).shape == (8,)
