"""Array conversion: caller's arrays in, kernel arrays through, caller's library out.

Every public numvox function goes through :class:`Call`::

    call = Call(backend, probs=probs, offsets=offsets)   # converts, picks the backend
    p, o = call["probs"], call["offsets"]                # NumPy (cpu) or device arrays (cuda)
    heat = call.output(out, (L, X, Y, Z), np.float32)    # caller's ``out=`` or a new buffer
    ...run the kernels of ``call.backend``...
    return call.wrap(heat)                               # back in the caller's library

What is accepted, and how (no copy is made unless a backend is forced across devices):

=====================================  ===========================================
input                                  kernel array
=====================================  ===========================================
``numpy.ndarray`` (any order/strides)  the array itself
host ``__dlpack__`` object (TF, torch)  ``numpy.from_dlpack`` view (read-only)
TensorFlow bfloat16 tensor             ``tf.bitcast`` to uint16, viewed as
                                       ``ml_dtypes.bfloat16``
``__cuda_array_interface__`` object    ``numba.cuda.as_cuda_array`` view
device ``__dlpack__`` object           ``cupy.from_dlpack`` view (needs CuPy)
=====================================  ===========================================

Results go back as NumPy for NumPy (and plain sequence) callers, CuPy for CuPy callers,
TensorFlow tensors for TensorFlow callers (through DLPack: zero-copy on host), and Numba
device arrays for other ``__cuda_array_interface__`` callers.
"""

import numpy as np

from .backend import cuda_simulated, resolve_backend
from .halfprec import NATIVE, half_code

# Where an array lives, by kind.
HOST_KINDS = ("numpy", "tensorflow", "dlpack")
DLPACK_CPU = 1  # kDLCPU
DLPACK_CUDA_HOST = 3  # kDLCUDAHost (pinned host memory, host-addressable)
# TensorFlow CHECK-fails (aborts the process) when an op touches a tensor whose buffer is
# not aligned to EIGEN_MAX_ALIGN_BYTES; DLPack imports are not checked on the way in.
TF_ALIGN = 64


def _module_root(obj):
    return type(obj).__module__.split(".", 1)[0]


def is_dask(obj):
    """True for a ``dask.array.Array`` (without importing Dask)."""
    return _module_root(obj) == "dask" and hasattr(obj, "chunks") and hasattr(obj, "dask")


def kind_of(obj, name="array"):
    """Classify an array-like: numpy, tensorflow, cupy, cuda, dlpack-cuda, dlpack or sequence.

    Raises TypeError, naming the argument ``name``, for None and for objects that are no array.
    """
    if obj is None:
        raise TypeError(f"{name} is None; expected an array")
    if isinstance(obj, np.ndarray):
        return "numpy"
    root = _module_root(obj)
    if root == "cupy":
        return "cupy"
    if root == "tensorflow" or root == "keras":
        if hasattr(obj, "__dlpack_device__"):
            device_type = obj.__dlpack_device__()[0]
            return "tensorflow" if device_type in (DLPACK_CPU, DLPACK_CUDA_HOST) else "tensorflow-cuda"
        return "tensorflow"
    if hasattr(obj, "__cuda_array_interface__"):
        return "cuda"
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        device_type = obj.__dlpack_device__()[0]
        return "dlpack" if device_type in (DLPACK_CPU, DLPACK_CUDA_HOST) else "dlpack-cuda"
    if np.isscalar(obj) or isinstance(obj, (list, tuple)) or hasattr(obj, "__array__"):
        return "sequence"
    raise TypeError(
        f"{name} must be an array (NumPy, CuPy, TensorFlow, or anything with __array__, "
        f"__cuda_array_interface__ or __dlpack__); got {type(obj).__name__}"
    )


def on_device(kind):
    return kind in ("cupy", "cuda", "dlpack-cuda", "tensorflow-cuda")


def bfloat16_dtype():
    """``ml_dtypes.bfloat16`` (installed with TensorFlow and JAX), or None."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def _tensorflow_to_numpy(tensor):
    import tensorflow as tf

    if tensor.dtype == tf.bfloat16:
        # NumPy's DLPack import has no bfloat16: reinterpret the same bits as uint16.
        bits = np.from_dlpack(tf.bitcast(tensor, tf.uint16))
        bf16 = bfloat16_dtype()
        return bits.view(bf16) if bf16 is not None else bits
    if not hasattr(tensor, "__dlpack__"):  # old TensorFlow or graph tensors
        return np.asarray(tensor)
    return np.from_dlpack(tensor)


def to_host(obj, kind=None):
    """A NumPy view of a host array-like (zero-copy), or a host copy of a device array."""
    kind = kind or kind_of(obj)
    if kind == "numpy":
        return obj
    if kind in ("tensorflow", "tensorflow-cuda"):
        if kind == "tensorflow-cuda":
            return obj.numpy()
        return _tensorflow_to_numpy(obj)
    if kind == "dlpack":
        return np.from_dlpack(obj)
    if kind == "cupy":
        return obj.get()
    if kind == "cuda":
        from numba import cuda

        return cuda.as_cuda_array(obj).copy_to_host()
    if kind == "dlpack-cuda":
        return to_host(_cupy().from_dlpack(obj), "cupy")
    return np.asarray(obj)


def _cupy():
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - needs a GPU machine
        raise ImportError(
            "this GPU array arrives through DLPack, which numvox reads through CuPy; "
            "install the 'gpu' extra (pip install 'numvox[gpu]')"
        ) from exc
    return cupy


def to_device(obj, kind=None):  # pragma: no cover - needs a GPU
    """A Numba device-array view of a device array-like, or a device copy of a host one."""
    from numba import cuda

    kind = kind or kind_of(obj)
    if kind in ("cupy", "cuda"):
        return cuda.as_cuda_array(obj)
    if kind in ("dlpack-cuda", "tensorflow-cuda"):
        return cuda.as_cuda_array(_cupy().from_dlpack(obj))
    host = to_host(obj, kind)
    if host.dtype == bfloat16_dtype():
        host = host.view(np.uint16)  # Numba has no bfloat16; kernels decode the bits
    return cuda.to_device(np.ascontiguousarray(host))


# -- the input policy: what any array argument may be ----------------------------------------

#: dtype kinds that no numvox kernel reads, by NumPy kind code
REFUSED_KINDS = {"O": "object", "U": "str", "S": "bytes", "V": "structured", "M": "datetime64",
                 "m": "timedelta64", "c": "complex"}
READABLE = "real floating (float16, bfloat16, float32, float64), integer or bool"


def check_tensorflow_dtype(tensor, name):
    """TypeError for a TensorFlow tensor whose dtype numvox cannot read (strings, complex,
    quantised types, resources), before any TensorFlow or DLPack call touches its buffer:
    some of those abort the process inside TensorFlow."""
    dt = tensor.dtype
    if dt.is_quantized or dt.is_complex or not (dt.is_floating or dt.is_integer or dt.is_bool):
        raise TypeError(f"{name} is a TensorFlow {dt.name} tensor; expected a {READABLE} tensor")


def host_policy(a, name):
    """A host array as the kernels read it: refused dtypes raise TypeError naming ``name``;
    non-native byte order (big-endian files: NIfTI/Analyze through nibabel, FITS) is converted
    once to native order (one copy of that input, O(n), before any kernel runs)."""
    dtype = np.dtype(a.dtype)
    if half_code(dtype) != NATIVE:
        return a
    if dtype.kind in REFUSED_KINDS:
        raise TypeError(f"{name} has dtype {dtype} ({REFUSED_KINDS[dtype.kind]}); expected a {READABLE} dtype")
    if not dtype.isnative:
        return a.astype(dtype.newbyteorder("="))
    return a


def _as_numpy(obj, name):
    try:
        return np.asarray(obj)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} cannot be read as an array ({exc})") from None


def check_output_size(shape, dtype, name="output"):
    """MemoryError, stating the size, when an output of ``shape`` and ``dtype`` cannot fit in
    this machine's memory (checked with Python integers, before anything is allocated)."""
    nbytes = int(np.dtype(dtype).itemsize)
    for s in shape:
        nbytes *= int(s)
    limit = physical_memory()
    if limit and nbytes > limit:
        raise MemoryError(
            f"{name} of shape {tuple(int(s) for s in shape)} and dtype {np.dtype(dtype)} would need "
            f"{nbytes / 2**30:.3g} GiB; this machine has {limit / 2**30:.3g} GiB of memory"
        )
    return nbytes


def physical_memory():
    """Bytes of physical memory (0 where the platform does not say)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 0


def _overlaps(a, b):
    """True when two host arrays may share memory (exact where cheap, else conservative)."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=10_000))
    except np.exceptions.TooHardError:
        return True


class Call:
    """The arrays of one numvox call, converted for its backend, and the way back.

    Parameters
    ----------
    backend : {None, "cpu", "cuda"}
        As in every public function.
    optional : tuple of str
        Names of the array arguments that may be None (kept as None); any other None raises
        TypeError.
    **arrays
        The call's array arguments by name.  The first non-None one decides the caller's
        library, in which results are handed back.

    Every array goes through the one input policy: objects that are no array, and dtypes no
    kernel reads (object, strings, complex, datetimes, quantised TF types), raise TypeError
    naming the argument before any foreign library reads their buffers; host arrays in
    non-native byte order are converted once to native order.
    """

    def __init__(self, backend=None, optional=(), **arrays):
        self.kinds = {}
        for name, a in arrays.items():
            if a is None and name in optional:
                continue
            self.kinds[name] = kind = kind_of(a, name)
            if kind in ("tensorflow", "tensorflow-cuda"):
                check_tensorflow_dtype(a, name)
        if not self.kinds:
            raise ValueError("no array arguments were given")
        self.like = next(iter(self.kinds.values()))
        self.backend = resolve_backend(backend, any(on_device(k) for k in self.kinds.values()))
        # Under the simulator the CUDA kernels run on host arrays.
        self.device_arrays = self.backend == "cuda" and not cuda_simulated()
        self.arrays = {name: (None if a is None else self._convert(a, name)) for name, a in arrays.items()}
        self._given_outs = []

    def _convert(self, a, name):
        kind = self.kinds[name]
        if self.device_arrays:  # pragma: no cover - needs a GPU
            arr = to_device(a, kind)
            if np.dtype(arr.dtype).kind in REFUSED_KINDS:
                raise TypeError(f"{name} has dtype {arr.dtype}; expected a {READABLE} dtype")
            return arr
        arr = _as_numpy(a, name) if kind == "sequence" else to_host(a, kind)
        return host_policy(arr, name)

    def __getitem__(self, name):
        return self.arrays[name]

    # -- outputs -------------------------------------------------------------------------
    def empty(self, shape, dtype):
        """A new uninitialised array on the call's backend."""
        if self.device_arrays:  # pragma: no cover - needs a GPU
            from numba import cuda

            return cuda.device_array(shape, dtype=dtype)
        return aligned_empty(shape, dtype)

    def zeros(self, shape, dtype):
        """A new zero-filled array on the call's backend."""
        if self.device_arrays:  # pragma: no cover - needs a GPU
            arr = self.empty(shape, dtype)
            _device_fill_zero(arr)
            return arr
        return aligned_empty(shape, dtype, zero=True)

    def output(self, out, shape, dtype, *, zero=False, name="out"):
        """The caller's ``out=`` buffer checked for shape/dtype, or a new array.

        ``out`` must live where the kernels run (a NumPy array for the CPU backend, a CuPy or
        ``__cuda_array_interface__`` array for CUDA), be writeable and C-contiguous.
        """
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        if out is None:
            check_output_size(shape, dtype, name="the result")
            return self.zeros(shape, dtype) if zero else self.empty(shape, dtype)
        kind = kind_of(out, name)
        if kind in ("tensorflow", "tensorflow-cuda"):
            raise TypeError(f"{name}= cannot be a TensorFlow tensor (they are immutable); pass out=None")
        if kind == "sequence":
            raise TypeError(f"{name} must be an array (NumPy for the CPU, device for CUDA); got {type(out).__name__}")
        if tuple(out.shape) != shape or np.dtype(out.dtype) != dtype:
            raise ValueError(
                f"{name} has shape {tuple(out.shape)} and dtype {np.dtype(out.dtype)}; "
                f"expected shape {shape} and dtype {dtype}"
            )
        for arg, a in self.arrays.items():
            if _overlaps(out, a):
                raise ValueError(f"{name} shares memory with the input {arg}; pass a separate buffer")
        if self.device_arrays:  # pragma: no cover - needs a GPU
            if not on_device(kind):
                raise TypeError(f"{name} is a host array but the call runs on CUDA; pass a device array")
            arr = to_device(out, kind)
            if not arr.is_c_contiguous():
                raise ValueError(f"{name} must be C-contiguous")
        else:
            if kind != "numpy":
                raise TypeError(f"{name} must be a NumPy array for backend 'cpu'; got {type(out).__name__}")
            arr = out
            if not arr.flags.writeable or not arr.flags.c_contiguous:
                raise ValueError(f"{name} must be writeable and C-contiguous")
        if zero:
            if self.device_arrays:  # pragma: no cover
                _device_fill_zero(arr)
            else:
                arr[...] = 0
        self._given_outs.append((arr, out))
        return arr

    # -- results -------------------------------------------------------------------------
    def wrap(self, result):
        """Hand a kernel result (or a tuple of them) back in the caller's library.

        A result that is the caller's own ``out=`` buffer is returned as that object.
        """
        if isinstance(result, tuple):
            return tuple(self.wrap(r) for r in result)
        if result is None or np.isscalar(result):
            return result
        for arr, given in self._given_outs:
            if result is arr or result is given or _same_buffer(result, arr):
                return given
        return from_kernel(result, self.like)


def aligned_empty(shape, dtype, align=TF_ALIGN, *, zero=False):
    """``np.empty`` (``np.zeros`` with ``zero=True``) whose data starts on an ``align``-byte
    boundary, so TensorFlow can use it in place through DLPack.  Zeroed buffers come from
    calloc: their pages are mapped (and zeroed by the OS) only where they are written."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = (np.zeros if zero else np.empty)(nbytes + align, dtype=np.uint8)
    start = (-raw.__array_interface__["data"][0]) % align
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _same_buffer(a, b):
    try:
        return _data_pointer(a) == _data_pointer(b) and tuple(a.shape) == tuple(b.shape)
    except (AttributeError, TypeError, KeyError):
        return False


def _data_pointer(a):
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    return a.__cuda_array_interface__["data"][0]


def from_kernel(result, like):
    """Convert a kernel result (NumPy or Numba device array) into the library of ``like``."""
    result_on_device = not isinstance(result, np.ndarray)
    if like in ("numpy", "sequence", "dlpack"):
        return result.copy_to_host() if result_on_device else result
    if like == "tensorflow" or like == "tensorflow-cuda":
        return _to_tensorflow(result, result_on_device)
    if like == "cupy":
        cupy = _cupy()
        return cupy.asarray(result)
    if like in ("cuda", "dlpack-cuda"):  # pragma: no cover - needs a GPU
        if result_on_device:
            return result
        from numba import cuda

        return cuda.to_device(result)
    return result


def _to_tensorflow(result, result_on_device):
    import tensorflow as tf

    if result_on_device:  # pragma: no cover - needs a GPU
        return tf.experimental.dlpack.from_dlpack(_cupy().asarray(result).toDlpack())
    if result.dtype == bfloat16_dtype():
        return tf.bitcast(_to_tensorflow(result.view(np.uint16), False), tf.bfloat16)
    if (
        result.ndim == 0
        or not result.flags.c_contiguous
        or result.dtype.kind not in "biuf"
        or _data_pointer(result) % TF_ALIGN
    ):
        return tf.convert_to_tensor(result)  # a copy, where TF cannot share the buffer safely
    try:
        return tf.experimental.dlpack.from_dlpack(result.__dlpack__())
    except Exception:  # TF refuses some buffers (e.g. misaligned); fall back to a copy
        return tf.convert_to_tensor(result)


def _device_fill_zero(arr):  # pragma: no cover - needs a GPU
    from numba import cuda

    from ._cuda_support import fill_zero_kernel, launch_1d

    flat = arr.reshape(arr.size) if arr.size else arr
    if arr.size:
        blocks, threads = launch_1d(arr.size)
        fill_zero_kernel[blocks, threads](flat)
        cuda.synchronize()
