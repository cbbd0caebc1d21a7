"""numvox operations on TensorFlow tensors, eagerly and inside ``tf.function``.

``numvox.tf.aggregate_votes``, ``heatmap_peaks``, ``descent_labels``, ``descent_basins``,
``correlate_batch``, ``pac_conv``, ``pac_conv_transpose``, ``pac_pool`` and their
``*_backward`` have the signatures of the top-level functions (without ``out=``: tensors are
immutable) and take and return ``tf.Tensor`` objects.  :func:`pac_conv`,
:func:`pac_conv_transpose` and :func:`pac_pool` are differentiable (their gradients are their
``*_backward``); the Keras layers in :mod:`numvox.keras` use them.  This module and
:mod:`numvox.keras` are the only parts of numvox that import TensorFlow; ``import numvox``
does not import them.

What this module knows of an operation comes from the family that owns it (each family
package's ``OPS``: the public function, its array arguments, and its output-shape rule, the
same rule the function uses at run time), so there is no second copy of any rule here.

Where a call runs
-----------------
**Eager mode** (inputs are eager tensors): the tensors go straight to the numvox kernels
through DLPack, with no copy: a host tensor becomes a read-only NumPy view of TensorFlow's own
buffer, and the result goes back as a tensor that wraps the kernel's output buffer.  GPU
tensors stay on the device: TF GPU tensor → DLPack → CuPy/Numba device array → CUDA kernels →
DLPack → TF tensor.  TensorFlow runs GPU ops asynchronously on its own streams and does not
hand a stream to DLPack consumers, so before the kernels run numvox waits for TensorFlow's
pending work (``tf.test.experimental.sync_devices()``), and after them it waits for Numba's
stream (``numba.cuda.synchronize()``) before TensorFlow may read the result.  Both waits are
device-wide (a pipeline drain: microseconds when idle).

**Graph mode** (inside ``tf.function``, ``model.fit``, Keras functional models): the op becomes
one node with static output shapes and dtypes (from the family's rule), so downstream graph
code and Keras see e.g. ``(None, 3, 32, 32, 32) float32``.  Which node depends on the route,
chosen when the function is traced:

- **CPU route** (no GPU visible to TensorFlow, ``backend="cpu"``, or a ``tf.device("/CPU")``
  placement): a ``tf.numpy_function`` node.  Its inputs arrive as NumPy views of the tensors
  (no copy in); TensorFlow copies the returned arrays into output tensors (one copy out, of
  the result only).
- **CUDA route** (TensorFlow places ops on a GPU and numvox's CUDA backend is usable, or
  ``backend="cuda"`` is forced): a ``tf.py_function`` node, which receives eager tensors where
  TensorFlow placed it and runs the eager path above, so GPU tensors stay on the GPU, zero-copy
  in and out, with the same two waits.  ``backend="cuda"`` where CUDA cannot run raises
  :class:`numvox.CudaUnavailableError` when the function is traced.  Under Numba's CUDA
  simulator (``NUMBA_ENABLE_CUDASIM=1``) this route runs the CUDA kernels on host tensors,
  which is how it is tested without a GPU.

A GPU that TensorFlow sees while numvox's CUDA backend is not usable (no ``gpu`` extra) falls
back to the CPU route: a host round trip of the inputs and results.  Neither node can be
XLA-compiled: keep numvox ops outside ``jit_compile=True`` functions.

Mixed precision
---------------
float16 outputs of ``mixed_float16`` models are read as their raw 16-bit patterns and decoded
inside the kernels (no float32 copy).  bfloat16 has no NumPy dtype; eager bfloat16 tensors are
reinterpreted (``tf.bitcast``, no copy) as ``uint16`` bits and viewed as
``ml_dtypes.bfloat16``, and in graphs TensorFlow hands ``tf.numpy_function`` the same
``ml_dtypes.bfloat16`` arrays; the kernels decode the bits either way.

Keras
-----
:class:`NumvoxLayer` wraps any of these ops as a Keras layer (e.g. the last step of a model:
``NumvoxLayer("aggregate_votes", threshold=0.5)([probs, offsets])``).
"""

import inspect

import numpy as np
import tensorflow as tf

from numvox import correlate, labels, pac, votes
from numvox._shared.arrays import check_tensorflow_dtype, host_policy
from numvox._shared.backend import cuda_usable, default_backend, resolve_backend

__all__ = [
    "aggregate_votes",
    "heatmap_peaks",
    "descent_labels",
    "descent_basins",
    "correlate_batch",
    "pac_conv",
    "pac_conv_backward",
    "pac_conv_transpose",
    "pac_conv_transpose_backward",
    "pac_pool",
    "pac_pool_backward",
    "NumvoxLayer",
    "OPS",
]

#: op name -> :class:`numvox._shared.ops.OpSpec`, as declared by the families
OPS = {spec.name: spec for family in (votes, labels, correlate, pac) for spec in family.OPS}


# -- shapes and dtypes -----------------------------------------------------------------------


def _dims(shape):
    """A TensorShape as a list of ints/None, or None for unknown rank."""
    shape = tf.TensorShape(shape)
    return None if shape.rank is None else shape.as_list()


def _specs(spec, shapes, dtypes, opts):
    """``[(TensorShape, tf.DType), ...]`` of the op's results, from the family's rule."""
    shapes = {n: shapes.get(n) for n in spec.arrays}
    dtypes = {n: np.dtype(tf.as_dtype(dtypes.get(n, tf.float32)).as_numpy_dtype) for n in spec.arrays}
    return [(tf.TensorShape(s), tf.as_dtype(np.dtype(d))) for s, d in spec.output_specs(shapes, dtypes, opts)]


# -- routes ----------------------------------------------------------------------------------


def _is_symbolic(t):
    return tf.is_symbolic_tensor(t)


def _on_gpu(t):
    return isinstance(t, tf.Tensor) and "GPU" in (getattr(t, "device", "") or "").upper()


def _graph_route(backend, tensors):
    """``"cpu"`` or ``"cuda"``: the route of a graph node, decided at trace time.

    ``backend="cuda"`` (or ``NUMVOX_BACKEND=cuda``) where CUDA cannot run raises
    :class:`numvox.CudaUnavailableError` here, while tracing.
    """
    requested = backend if backend is not None else default_backend()
    if requested is not None:
        return resolve_backend(requested, False)
    devices = [(getattr(t, "device", "") or "").upper() for t in tensors]
    pinned_to_cpu = any("CPU" in d for d in devices)
    gpu_placed = any("GPU" in d for d in devices) or (
        not pinned_to_cpu and bool(tf.config.list_logical_devices("GPU"))
    )
    return "cuda" if gpu_placed and cuda_usable() else "cpu"


def _bind(name, args, kwargs):
    fn = OPS[name].function
    bound = inspect.signature(fn).bind(*args, **kwargs)
    if bound.arguments.get("out") is not None:
        raise TypeError(f"numvox.tf.{name} has no out= (TensorFlow tensors are immutable)")
    bound.arguments.pop("out", None)
    return bound


def _call(name, args, kwargs):
    spec = OPS[name]
    bound = _bind(name, args, kwargs)
    opts = {k: v for k, v in bound.arguments.items() if k not in spec.arrays}
    tensors = {}
    for n in spec.arrays:
        a = bound.arguments.get(n)
        if a is None:
            if bound.signature.parameters[n].default is not None:
                raise TypeError(f"{n} is None; expected a tensor")
            continue
        tensors[n] = _as_tensor(a, n)
    if tf.executing_eagerly() and not any(_is_symbolic(t) for t in tensors.values()):
        return _eager(spec.function, tensors, opts)
    return _graph(spec, tensors, opts)


def _as_tensor(a, name):
    """``a`` as a tensor whose dtype numvox reads, checked before any node is built (in graphs
    too, so a bad input is a TypeError naming the argument, not an error from inside a node)."""
    if not isinstance(a, (tf.Tensor, tf.Variable)):
        if isinstance(a, np.ndarray):
            a = host_policy(a, name)
        try:
            a = tf.convert_to_tensor(a)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} cannot be read as a tensor ({type(a).__name__}: {exc})") from None
    check_tensorflow_dtype(a, name)
    return a


def _eager(fn, tensors, opts):
    tensors = {n: (tf.convert_to_tensor(t) if isinstance(t, tf.Variable) else t) for n, t in tensors.items()}
    gpu = any(_on_gpu(t) for t in tensors.values())
    if gpu:  # pragma: no cover - needs a GPU
        tf.test.experimental.sync_devices()  # TF's queued work that produces the inputs is done
    result = fn(**tensors, **opts)
    if gpu:  # pragma: no cover - needs a GPU
        from numba import cuda

        cuda.synchronize()  # the kernels' results are written before TF reads them
    return _as_tensors(result)


def _as_tensors(result):
    if isinstance(result, tuple):
        return tuple(_as_tensors(r) for r in result)
    if isinstance(result, (tf.Tensor, type(None))):
        return result
    return tf.convert_to_tensor(result)


def _graph(spec, tensors, opts):
    names = list(tensors)
    specs = _specs(spec, {n: _dims(t.shape) for n, t in tensors.items()},
                   {n: t.dtype for n, t in tensors.items()}, opts)
    route = _graph_route(opts.get("backend"), tensors.values())
    inputs = [tensors[n] for n in names]
    tout = [dt for _, dt in specs]
    if route == "cuda":
        cuda_opts = {**opts, "backend": "cuda"}

        def device(*ts):
            result = _eager(spec.function, dict(zip(names, ts)), cuda_opts)
            result = result if isinstance(result, tuple) else (result,)
            return [r if r.dtype == dt else tf.cast(r, dt) for r, dt in zip(result, tout)]

        outs = tf.py_function(device, inputs, tout, name=f"numvox_{spec.name}")
    else:
        def host(*arrays):
            result = spec.function(**dict(zip(names, arrays)), **opts)
            result = result if isinstance(result, tuple) else (result,)
            # np.asarray is a no-op when the kernel already returns the declared dtype.
            return [np.asarray(r, dtype=dt.as_numpy_dtype) for r, dt in zip(result, tout)]

        outs = tf.numpy_function(host, inputs, tout, stateful=False, name=f"numvox_{spec.name}")
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    for o, (shape, _) in zip(outs, specs):
        o.set_shape(shape)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _make(name):
    @tf.autograph.experimental.do_not_convert
    def op(*args, **kwargs):
        return _call(name, args, kwargs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"``numvox.{name}`` on TensorFlow tensors (eager: zero-copy DLPack; in ``tf.function``: one\n"
        f"node with static output shapes and dtypes, on the CPU or CUDA route).  Same arguments as\n"
        f"``numvox.{name}`` except ``out=``; see the module docstring of :mod:`numvox.tf`."
    )
    return op


aggregate_votes = _make("aggregate_votes")
heatmap_peaks = _make("heatmap_peaks")
descent_labels = _make("descent_labels")
descent_basins = _make("descent_basins")
correlate_batch = _make("correlate_batch")
pac_conv_backward = _make("pac_conv_backward")
pac_conv_transpose_backward = _make("pac_conv_transpose_backward")
pac_pool_backward = _make("pac_pool_backward")


def _with_gradient(name, arrays, bias, extra, options, kernel_params=None):
    """``numvox.<name>`` on tensors with its gradient from ``numvox.<name>_backward``
    (through ``tf.custom_gradient``), eagerly and in graphs, on the forward pass's route.
    ``arrays``: the differentiable array arguments; ``bias`` (or None) follows them as the
    forward's next argument when ``extra`` is None, else ``extra`` (non-tensor positional
    arguments) follows them in both calls.  ``kernel_params`` (or None): the inverse
    kernel's ``[alpha, lambda]``, differentiable too (``kernel_params_grad=True`` of the
    backward function)."""
    forward, backward = _make(name), globals()[f"{name}_backward"]
    names = OPS[name].arrays
    tensors = [_as_tensor(t, names[i]) for i, t in enumerate(arrays)]
    if bias is not None:
        tensors.append(_as_tensor(bias, names[len(arrays)]))
    n, nb = len(arrays), len(tensors)
    if kernel_params is not None:
        tensors.append(_as_tensor(kernel_params, "kernel_params"))

    @tf.custom_gradient
    def _fwd(*ts):
        kp = {"kernel_params": ts[nb]} if kernel_params is not None else {}
        out = forward(*ts[:n], *((ts[n] if bias is not None else None,) if extra is None else extra), **kp,
                      **options)

        def grad(dout):
            g = backward(dout, *ts[:n], *(extra or ()), **kp, kernel_params_grad=bool(kp), **options)
            g = tuple(g[:nb]) + (tuple(g[-1:]) if kp else ())  # bias's gradient only if it was given
            return tuple(tf.cast(gi, t.dtype) for gi, t in zip(g, ts))

        return out, grad

    return _fwd(*tensors)


@tf.autograph.experimental.do_not_convert
def pac_conv(x, guide, weight, bias=None, kernel_params=None, **options):
    """``numvox.pac_conv`` on TensorFlow tensors, differentiable.

    Same arguments as ``numvox.pac_conv`` (``stride``, ``padding``, ``dilation``,
    ``kernel``, ``kernel_params``, ``normalize``, ``backend``).  Gradients with respect to
    ``x``, ``guide``, ``weight``, ``bias`` and ``kernel_params`` (an inverse kernel's
    ``[alpha, lambda]``, a tensor of 2 that overrides the values in the kernel's name) come
    from ``numvox.pac_conv_backward`` (through ``tf.custom_gradient``), eagerly and in graphs,
    on the same route as the forward pass.
    """
    return _with_gradient("pac_conv", (x, guide, weight), bias, None, options, kernel_params)


@tf.autograph.experimental.do_not_convert
def pac_conv_transpose(x, guide, weight, bias=None, kernel_params=None, **options):
    """``numvox.pac_conv_transpose`` on TensorFlow tensors, differentiable with respect to
    ``x``, ``guide``, ``weight``, ``bias`` and ``kernel_params`` (gradients from
    ``numvox.pac_conv_transpose_backward``, as :func:`pac_conv`)."""
    return _with_gradient("pac_conv_transpose", (x, guide, weight), bias, None, options, kernel_params)


@tf.autograph.experimental.do_not_convert
def pac_pool(x, guide, kernel_size, kernel_params=None, **options):
    """``numvox.pac_pool`` on TensorFlow tensors, differentiable with respect to ``x``,
    ``guide`` and ``kernel_params`` (gradients from ``numvox.pac_pool_backward``, as
    :func:`pac_conv`)."""
    return _with_gradient("pac_pool", (x, guide), None, (kernel_size,), options, kernel_params)


# -- Keras -----------------------------------------------------------------------------------


def _keras_layer_base():
    import keras

    return keras.layers.Layer


class NumvoxLayer(_keras_layer_base()):
    """A Keras layer that applies one numvox op (by name) to its input tensors.

    Parameters
    ----------
    op : str
        One of :data:`OPS` (e.g. ``"aggregate_votes"``).
    **options
        The op's keyword options (``threshold=0.5, splat="linear"``...), fixed per layer.

    Call it with the op's array arguments as a list, in the op's order
    (``layer([probs, offsets])``), or with one tensor.  Output shapes are static, so Keras
    functional models see them.  Not trainable, no gradient (except the PAC ops
    ``"pac_conv"``, ``"pac_conv_transpose"`` and ``"pac_pool"``).
    """

    def __init__(self, op, trainable=False, **options):
        known = {"name", "dtype", "autocast"}
        base = {k: options.pop(k) for k in list(options) if k in known}
        super().__init__(trainable=trainable, **base)
        if op not in OPS:
            raise ValueError(f"op must be one of {sorted(OPS)}; got {op!r}")
        self.op, self.options = op, options

    @tf.autograph.experimental.do_not_convert
    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        fn = pac_conv if self.op == "pac_conv" else globals()[self.op]
        result = fn(*inputs, **self.options)
        return list(result) if isinstance(result, tuple) else result

    def compute_output_shape(self, input_shape):
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        spec = OPS[self.op]
        dims = {n: (None if s is None else list(s)) for n, s in zip(spec.arrays, shapes)}
        out = [None if s.rank is None else tuple(s.as_list()) for s, _ in _specs(spec, dims, {}, self.options)]
        return out[0] if len(out) == 1 else out

    def get_config(self):
        return {**super().get_config(), "op": self.op, **self.options}
