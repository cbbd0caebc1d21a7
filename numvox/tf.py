"""numvox operations on TensorFlow tensors, eagerly and inside ``tf.function``.

``numvox.tf.aggregate_votes``, ``heatmap_peaks``, ``descent_labels``, ``descent_basins``,
``correlate_batch``, ``pac_conv`` and ``pac_conv_backward`` have the signatures of the
top-level functions (without ``out=``: tensors are immutable) and take and return
``tf.Tensor`` objects.  This module is the only part of numvox that imports TensorFlow; it
is imported on first use (``import numvox`` does not import it).

How a call runs
---------------
**Eager mode** (inputs are eager tensors): the tensors go straight to the numvox kernels
through DLPack, with no copy: a host tensor becomes a read-only NumPy view of TensorFlow's own
buffer, and the result goes back as a tensor that wraps the kernel's output buffer
(``tf.experimental.dlpack.from_dlpack``).  GPU tensors stay on the device: TF GPU tensor →
DLPack → CuPy/Numba device array → CUDA kernels → DLPack → TF tensor.  TensorFlow runs GPU
ops asynchronously on its own streams and does not hand a stream to DLPack consumers, so
before the kernels run numvox waits for TensorFlow's pending work
(``tf.test.experimental.sync_devices()``), and after them it waits for Numba's stream
(``numba.cuda.synchronize()``) before TensorFlow may read the result.  Both waits are
device-wide (cost: a pipeline drain, microseconds when idle).

**Graph mode** (inside ``tf.function``, ``model.fit``, Keras functional models): the op becomes
one ``tf.numpy_function`` node whose output dtypes and static shapes are set from a per-op
rule table (:data:`RULES`), so downstream graph code and Keras see e.g.
``(None, 3, 32, 32, 32) float32``.  ``tf.numpy_function`` runs on the host in the calling
thread: on CPU its inputs arrive as NumPy views of the tensors (no copy in), and TensorFlow
copies the returned arrays into output tensors (one copy out, of the result only: for
vote aggregation that is the heatmaps, not the far larger model outputs).  GPU tensors in a
graph make a host round trip (device → host copy of the inputs, CPU kernels, host → device
copy of the results); call the op eagerly, outside the ``tf.function``, to keep GPU data on
the device.  The node is not differentiable (except :func:`pac_conv`, whose gradient calls
:func:`pac_conv_backward`) and is not XLA-compilable: keep it outside
``jit_compile=True`` functions.

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

import importlib
import inspect

import numpy as np
import tensorflow as tf

__all__ = [
    "aggregate_votes",
    "heatmap_peaks",
    "descent_labels",
    "descent_basins",
    "correlate_batch",
    "pac_conv",
    "pac_conv_backward",
    "NumvoxLayer",
    "RULES",
]


# -- output rules: (static input shapes, options) -> [(shape, dtype), ...] ------------------


def _dims(shape):
    """A TensorShape as a list of ints/None, or None for unknown rank."""
    shape = tf.TensorShape(shape)
    return None if shape.rank is None else shape.as_list()


def _float_result(*dtypes):
    """float64 if any input is float64, else float32 (numvox accumulates in >= float32)."""
    return np.float64 if any(tf.as_dtype(d) == tf.float64 for d in dtypes) else np.float32


def _rule_votes(shapes, dtypes, opts):
    p = shapes["probs"]
    if p is None:
        return [(None, np.float32)]
    c = p[-1]
    n_lm = None if c is None else c - 1
    return [(p[:-4] + [n_lm] + p[-4:-1], np.float32)]


def _rule_peaks(shapes, dtypes, opts):
    h = shapes["heatmaps"]
    if h is None:
        return [(None, np.float64), (None, np.float64)]
    lead = h[:-3]
    return [(lead + [3], np.float64), (lead, np.float64)]


def _rule_labels(shapes, dtypes, opts):
    return [(shapes["volume"], np.uint8)]


def _rule_basins(shapes, dtypes, opts):
    return [(shapes["volume"], np.int32)]


def _corr_out_len(n, k, mode):
    if n is None or k is None:
        return None
    if mode == "full":
        return n + k - 1
    if mode == "same":
        return n
    return n - k + 1


def _rule_correlate(shapes, dtypes, opts):
    im, fi = shapes["images"], shapes["filters"]
    single = (tf.float32, tf.float16, tf.bfloat16)
    both_single = all(tf.as_dtype(dtypes[n]) in single for n in ("images", "filters"))
    dtype = np.float32 if both_single else np.float64
    reduce = opts.get("reduce")
    n = None if im is None else im[0]
    k = None if fi is None else fi[0]
    if im is None or fi is None:
        spatial = None
    else:
        s_im, s_fi = im[1:], fi[1:]
        ch = opts.get("channel_axis")
        if ch is not None:
            ax = ch % len(s_im)
            s_im = s_im[:ax] + s_im[ax + 1 :]
            s_fi = s_fi[:ax] + s_fi[ax + 1 :]
        spatial = [_corr_out_len(a, b, opts.get("mode", "same")) for a, b in zip(s_im, s_fi)]
    if reduce is None:
        return [(None if spatial is None else [n, k] + spatial, dtype)]
    if reduce == "max":
        return [([n, k], dtype)]
    ndim = None if spatial is None else len(spatial)
    return [([n, k], dtype), ([n, k, ndim], np.int64)]


def _per_axis(value, d):
    return (value,) * d if isinstance(value, (int, np.integer)) else tuple(value)


def _rule_pac(shapes, dtypes, opts):
    x, w = shapes["x"], shapes["weight"]
    dtype = _float_result(dtypes["x"], dtypes["guide"], dtypes["weight"])
    if x is None or w is None:
        return [(None, dtype)]
    d = len(w) - 2
    ks, n_out = w[:d], w[-1]
    stride = _per_axis(opts.get("stride", 1), d)
    dil = _per_axis(opts.get("dilation", 1), d)
    padding = opts.get("padding", "same")
    spatial = []
    for i, s in enumerate(x[1 : 1 + d]):
        k = ks[i]
        if s is None or k is None:
            spatial.append(None)
            continue
        if isinstance(padding, str) and padding.lower() == "valid":
            pad2 = 0
        elif isinstance(padding, str):  # "same": (k-1)*dilation in all, split before/after
            pad2 = (k - 1) * dil[i]
        else:
            pad2 = 2 * _per_axis(padding, d)[i]
        spatial.append((s + pad2 - dil[i] * (k - 1) - 1) // stride[i] + 1)
    return [([x[0]] + spatial + [n_out], dtype)]


def _rule_pac_backward(shapes, dtypes, opts):
    dtype = _float_result(dtypes["x"], dtypes["guide"], dtypes["weight"])
    w = shapes["weight"]
    return [
        (shapes["x"], dtype),
        (shapes["guide"], dtype),
        (w, dtype),
        (None if w is None else [w[-1]], dtype),
    ]


class _Rule:
    def __init__(self, module, arrays, fn):
        self.module, self.arrays, self.fn = module, arrays, fn


#: op name -> (module, array argument names, output rule)
RULES = {
    "aggregate_votes": _Rule("numvox.votes", ("probs", "offsets"), _rule_votes),
    "heatmap_peaks": _Rule("numvox.votes", ("heatmaps",), _rule_peaks),
    "descent_labels": _Rule("numvox.labels", ("volume",), _rule_labels),
    "descent_basins": _Rule("numvox.labels", ("volume",), _rule_basins),
    "correlate_batch": _Rule("numvox.correlate", ("images", "filters"), _rule_correlate),
    "pac_conv": _Rule("numvox.pac", ("x", "guide", "weight", "bias"), _rule_pac),
    "pac_conv_backward": _Rule("numvox.pac", ("grad_out", "x", "guide", "weight"), _rule_pac_backward),
}


# -- the mechanism --------------------------------------------------------------------------


def _numvox_function(name):
    return getattr(importlib.import_module(RULES[name].module), name)


def _is_symbolic(t):
    return tf.is_symbolic_tensor(t)


def _on_gpu(t):
    return isinstance(t, tf.Tensor) and "GPU" in (getattr(t, "device", "") or "").upper()


def _bind(name, args, kwargs):
    fn = _numvox_function(name)
    bound = inspect.signature(fn).bind(*args, **kwargs)
    if bound.arguments.get("out") is not None:
        raise TypeError(f"numvox.tf.{name} has no out= (TensorFlow tensors are immutable)")
    bound.arguments.pop("out", None)
    return fn, bound


def _call(name, args, kwargs):
    fn, bound = _bind(name, args, kwargs)
    rule = RULES[name]
    array_names = [n for n in rule.arrays if bound.arguments.get(n) is not None]
    opts = {k: v for k, v in bound.arguments.items() if k not in rule.arrays}
    tensors = {}
    for n in array_names:
        a = bound.arguments[n]
        tensors[n] = a if isinstance(a, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(a)
    if tf.executing_eagerly() and not any(_is_symbolic(t) for t in tensors.values()):
        return _eager(fn, tensors, opts)
    return _graph(name, fn, rule, tensors, opts)


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


def _graph(name, fn, rule, tensors, opts):
    names = list(tensors)
    shapes = {n: _dims(t.shape) for n, t in tensors.items()}
    dtypes = {n: t.dtype for n, t in tensors.items()}
    for n in rule.arrays:
        shapes.setdefault(n, None)
        dtypes.setdefault(n, tf.float32)
    specs = rule.fn(shapes, dtypes, opts)
    host_opts = dict(opts)  # backend="cuda" in a graph: host arrays copied to the GPU and back

    def host(*arrays):
        result = fn(**dict(zip(names, arrays)), **host_opts)
        result = result if isinstance(result, tuple) else (result,)
        # np.asarray is a no-op when the kernel already returns the declared dtype.
        return [np.asarray(_to_numpy(r), dtype=np.dtype(dt)) for r, (_, dt) in zip(result, specs)]

    outs = tf.numpy_function(host, [tensors[n] for n in names], [tf.as_dtype(dt) for _, dt in specs],
                             stateful=False, name=f"numvox_{name}")
    for o, (shape, _) in zip(outs, specs):
        o.set_shape(tf.TensorShape(shape))
    return outs[0] if len(outs) == 1 else tuple(outs)


def _to_numpy(r):
    if isinstance(r, np.ndarray):
        return r
    if hasattr(r, "copy_to_host"):  # pragma: no cover - Numba device array
        return r.copy_to_host()
    if hasattr(r, "get"):  # pragma: no cover - CuPy
        return r.get()
    return np.asarray(r)


def _make(name):
    @tf.autograph.experimental.do_not_convert
    def op(*args, **kwargs):
        return _call(name, args, kwargs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"``numvox.{name}`` on TensorFlow tensors (eager: zero-copy DLPack; in ``tf.function``: a\n"
        f"``tf.numpy_function`` node with static output shapes and dtypes).  Same arguments as\n"
        f"``numvox.{name}`` except ``out=``; see the module docstring of :mod:`numvox.tf`."
    )
    return op


aggregate_votes = _make("aggregate_votes")
heatmap_peaks = _make("heatmap_peaks")
descent_labels = _make("descent_labels")
descent_basins = _make("descent_basins")
correlate_batch = _make("correlate_batch")
pac_conv_backward = _make("pac_conv_backward")
_pac_conv_forward = _make("pac_conv")


@tf.autograph.experimental.do_not_convert
def pac_conv(x, guide, weight, bias=None, **options):
    """``numvox.pac_conv`` on TensorFlow tensors, differentiable.

    Same arguments as ``numvox.pac_conv``.  Gradients with respect to ``x``, ``guide``,
    ``weight`` and ``bias`` come from ``numvox.pac_conv_backward`` (through
    ``tf.custom_gradient``), eagerly and in graphs.
    """
    tensors = [tf.convert_to_tensor(t) for t in (x, guide, weight)]
    has_bias = bias is not None
    if has_bias:
        tensors.append(tf.convert_to_tensor(bias))

    @tf.custom_gradient
    def _fwd(*ts):
        out = _pac_conv_forward(*ts[:3], ts[3] if has_bias else None, **options)

        def grad(dout):
            g = pac_conv_backward(dout, *ts[:3], **options)
            gx, gguide, gw, gb = (tf.cast(gi, t.dtype) for gi, t in zip(g, list(ts[:3]) + [ts[-1]]))
            return (gx, gguide, gw, gb) if has_bias else (gx, gguide, gw)

        return out, grad

    return _fwd(*tensors)



# -- Keras -----------------------------------------------------------------------------------


def _keras_layer_base():
    import keras

    return keras.layers.Layer


class NumvoxLayer(_keras_layer_base()):
    """A Keras layer that applies one numvox op (by name) to its input tensors.

    Parameters
    ----------
    op : str
        One of :data:`RULES` (e.g. ``"aggregate_votes"``).
    **options
        The op's keyword options (``threshold=0.5, splat="linear"``...), fixed per layer.

    Call it with the op's array arguments as a list, in the op's order
    (``layer([probs, offsets])``), or with one tensor.  Output shapes are static, so Keras
    functional models see them.  Not trainable, no gradient (except ``"pac_conv"``).
    """

    def __init__(self, op, trainable=False, **options):
        known = {"name", "dtype", "autocast"}
        base = {k: options.pop(k) for k in list(options) if k in known}
        super().__init__(trainable=trainable, **base)
        if op not in RULES:
            raise ValueError(f"op must be one of {sorted(RULES)}; got {op!r}")
        self.op, self.options = op, options

    @tf.autograph.experimental.do_not_convert
    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        fn = pac_conv if self.op == "pac_conv" else globals()[self.op]
        result = fn(*inputs, **self.options)
        return list(result) if isinstance(result, tuple) else result

    def compute_output_shape(self, input_shape):
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        rule = RULES[self.op]
        sh = {n: (None if s is None else list(s)) for n, s in zip(rule.arrays, shapes)}
        dt = {n: tf.float32 for n in rule.arrays}
        for n in rule.arrays:
            sh.setdefault(n, None)
        specs = rule.fn(sh, dt, self.options)
        out = [None if s is None else tuple(s) for s, _ in specs]
        return out[0] if len(out) == 1 else out

    def get_config(self):
        return {**super().get_config(), "op": self.op, **self.options}
