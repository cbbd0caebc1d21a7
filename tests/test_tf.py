"""numvox.tf: every op eagerly (zero-copy DLPack) and inside tf.function (static shapes)."""

import importlib
import subprocess
import sys

import numpy as np
import pytest
from reference import ref_pac, ref_votes

tf = pytest.importorskip("tensorflow")
ntf = pytest.importorskip("numvox.tf")


def _require(module, *names):
    try:
        mod = importlib.import_module(module)
        for n in names:
            getattr(mod, n)
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"{module}.{names} is not available in this build yet ({exc})")


def _graph(fn, *tensors, signature=None, **kw):
    """Run ``fn`` inside tf.function; return (results, traced static outputs)."""
    traced = []

    def body(*ts):
        out = fn(*ts, **kw)
        traced.append(out)
        return out

    g = tf.function(body, input_signature=signature)
    return g(*tensors), traced[-1]


def _static(t):
    return tuple(t.shape.as_list()) if t.shape.rank is not None else None


# ---- independent references -------------------------------------------------------------


def _votes_inputs(rng, shape=(7, 6, 5), n_lm=3, batch=None):
    lead = () if batch is None else (batch,)
    p = rng.random(lead + shape + (n_lm + 1,)).astype(np.float32)
    o = (rng.normal(size=lead + shape + (3 * n_lm,)) * 2).astype(np.float32)
    return p, o


# ---- lazy import -------------------------------------------------------------------------


def test_numvox_import_does_not_import_tensorflow():
    code = (
        "import sys, numvox; assert 'tensorflow' not in sys.modules; "
        "import numvox.demo; assert 'tensorflow' not in sys.modules; "
        "m = numvox.tf; assert 'tensorflow' in sys.modules and hasattr(m, 'aggregate_votes')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- aggregate_votes / heatmap_peaks --------------------------------------------------------


def test_aggregate_votes_eager_and_graph_match_reference():
    _require("numvox.votes", "aggregate_votes")
    rng = np.random.default_rng(1)
    p, o = _votes_inputs(rng)
    P, O = tf.constant(p), tf.constant(o)
    eager = ntf.aggregate_votes(P, O, threshold=0.4)
    assert isinstance(eager, tf.Tensor) and eager.dtype == tf.float32 and eager.shape == (3, 7, 6, 5)
    ref = ref_votes(p, o, 0.4)[0]
    np.testing.assert_allclose(eager.numpy(), ref, atol=1e-5 * max(1.0, p.sum()))
    graph, traced = _graph(ntf.aggregate_votes, P, O, threshold=0.4)
    assert _static(traced) == (3, 7, 6, 5) and traced.dtype == tf.float32
    np.testing.assert_array_equal(graph.numpy(), eager.numpy())


def test_aggregate_votes_graph_partial_shapes_and_batch():
    _require("numvox.votes", "aggregate_votes")
    rng = np.random.default_rng(2)
    p, o = _votes_inputs(rng, batch=2)
    sig = [tf.TensorSpec([None, None, None, None, 4], tf.float32),
           tf.TensorSpec([None, None, None, None, 9], tf.float32)]
    out, traced = _graph(ntf.aggregate_votes, tf.constant(p), tf.constant(o), signature=sig, splat="linear")
    assert _static(traced) == (None, 3, None, None, None)
    assert out.shape == (2, 3, 7, 6, 5)
    np.testing.assert_allclose(out.numpy()[1], ntf.aggregate_votes(p[1], o[1], splat="linear").numpy(),
                               rtol=1e-6, atol=1e-6)
    sig = [tf.TensorSpec(None, tf.float32), tf.TensorSpec(None, tf.float32)]  # unknown rank
    out, traced = _graph(ntf.aggregate_votes, tf.constant(p), tf.constant(o), signature=sig)
    assert traced.shape.rank is None and out.shape == (2, 3, 7, 6, 5)


def test_heatmap_peaks_eager_and_graph():
    _require("numvox.votes", "heatmap_peaks")
    h = np.zeros((2, 6, 6, 6), np.float32)
    h[0, 1, 2, 3] = 4.0
    h[1, 4, 4, 0] = 1.0
    h[1, 5, 4, 0] = 1.0
    H = tf.constant(h)
    c, v = ntf.heatmap_peaks(H, radius=1)
    np.testing.assert_allclose(c.numpy(), [[1, 2, 3], [4.5, 4, 0]])
    np.testing.assert_allclose(v.numpy(), [4, 1])
    (gc, gv), (tc, tv) = _graph(ntf.heatmap_peaks, H)
    assert _static(tc) == (2, 3) and _static(tv) == (2,)
    assert tc.dtype == c.dtype and tv.dtype == v.dtype
    np.testing.assert_array_equal(gc.numpy(), c.numpy())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_inputs_eager_and_graph(dtype):
    _require("numvox.votes", "aggregate_votes")
    rng = np.random.default_rng(3)
    p, o = _votes_inputs(rng)
    P = tf.cast(tf.constant(p), dtype)
    O = tf.cast(tf.constant(o), dtype)
    # The reference sees exactly the half-precision values (rounded once, then float64).
    ref = ref_votes(tf.cast(P, tf.float64).numpy(), tf.cast(O, tf.float64).numpy(), 0.5)[0]
    eager = ntf.aggregate_votes(P, O)
    graph, traced = _graph(ntf.aggregate_votes, P, O)
    assert traced.dtype == tf.float32 and _static(traced) == (3, 7, 6, 5)
    np.testing.assert_allclose(eager.numpy(), ref, atol=1e-4)
    np.testing.assert_array_equal(graph.numpy(), eager.numpy())
    c, v = ntf.heatmap_peaks(tf.cast(eager, dtype))  # half-precision heatmaps too
    assert c.shape == (3, 3)


def test_eager_call_makes_no_copy_in_or_out(monkeypatch):
    _require("numvox.votes", "aggregate_votes")
    from numvox._shared import arrays

    seen_in, seen_out = [], []
    to_host, from_kernel = arrays.to_host, arrays.from_kernel

    def spy_to_host(obj, kind=None):
        res = to_host(obj, kind)
        seen_in.append(res.__array_interface__["data"][0])
        return res

    def spy_from_kernel(result, like):
        seen_out.append(result.__array_interface__["data"][0])
        return from_kernel(result, like)

    monkeypatch.setattr(arrays, "to_host", spy_to_host)
    monkeypatch.setattr(arrays, "from_kernel", spy_from_kernel)
    rng = np.random.default_rng(4)
    p, o = _votes_inputs(rng, shape=(16, 16, 16))
    P, O = tf.constant(p), tf.constant(o)
    heat = ntf.aggregate_votes(P, O)
    tf_ptrs = [np.from_dlpack(t).__array_interface__["data"][0] for t in (P, O)]
    assert seen_in == tf_ptrs  # the kernels read TensorFlow's own buffers
    assert np.from_dlpack(heat).__array_interface__["data"][0] == seen_out[0]  # and TF wraps theirs


def test_out_is_refused():
    _require("numvox.votes", "aggregate_votes")
    p, o = _votes_inputs(np.random.default_rng(5))
    with pytest.raises(TypeError, match="out="):
        ntf.aggregate_votes(tf.constant(p), tf.constant(o), out=np.zeros((3, 7, 6, 5), np.float32))


def test_errors_propagate_eagerly_and_from_graphs():
    _require("numvox.votes", "aggregate_votes")
    p, o = _votes_inputs(np.random.default_rng(6))
    with pytest.raises(ValueError):
        ntf.aggregate_votes(tf.constant(p), tf.constant(o[..., :5]))
    with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError)):
        _graph(ntf.aggregate_votes, tf.constant(p), tf.constant(o[..., :5]))
    with pytest.raises(TypeError):
        ntf.aggregate_votes(tf.constant(p), tf.constant(o), bogus=1)


# ---- descent labels / basins --------------------------------------------------------------


def test_descent_labels_eager_and_graph():
    _require("numvox.labels", "descent_labels")
    import numvox

    vol = np.random.default_rng(7).integers(0, 6, (6, 7, 8)).astype(np.int16)
    eager = ntf.descent_labels(tf.constant(vol))
    assert eager.dtype == tf.uint8
    np.testing.assert_array_equal(eager.numpy(), numvox.descent_labels(vol))
    sig = [tf.TensorSpec([None, 7, None], tf.int16)]
    graph, traced = _graph(ntf.descent_labels, tf.constant(vol), signature=sig, border="zero")
    assert _static(traced) == (None, 7, None) and traced.dtype == tf.uint8
    np.testing.assert_array_equal(graph.numpy(), numvox.descent_labels(vol, border="zero"))


def test_descent_basins_eager_and_graph():
    _require("numvox.labels", "descent_basins")
    import numvox

    vol = np.random.default_rng(8).random((6, 5, 4)).astype(np.float32)
    expected = numvox.descent_basins(vol)
    eager = ntf.descent_basins(tf.constant(vol))
    graph, traced = _graph(ntf.descent_basins, tf.constant(vol))
    assert traced.dtype == tf.int32 and _static(traced) == (6, 5, 4)
    np.testing.assert_array_equal(eager.numpy(), expected)
    np.testing.assert_array_equal(graph.numpy(), expected)


# ---- correlate_batch ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "same"},
        {"mode": "full"},
        {"mode": "valid", "reduce": "max"},
        {"mode": "same", "reduce": "argmax"},
        {"mode": "valid", "channel_axis": -1},
    ],
)
def test_correlate_batch_eager_and_graph(kw):
    _require("numvox.correlate", "correlate_batch")
    from scipy import signal

    rng = np.random.default_rng(9)
    im = rng.normal(size=(2, 9, 8, 2)).astype(np.float32)
    fi = rng.normal(size=(3, 3, 4, 2)).astype(np.float32)
    eager = ntf.correlate_batch(tf.constant(im), tf.constant(fi), **kw)
    graph, traced = _graph(ntf.correlate_batch, tf.constant(im), tf.constant(fi), **kw)
    eager = eager if isinstance(eager, tuple) else (eager,)
    graph = graph if isinstance(graph, tuple) else (graph,)
    traced = traced if isinstance(traced, tuple) else (traced,)
    for e, g, t in zip(eager, graph, traced):
        assert _static(t) == tuple(e.shape) and t.dtype == e.dtype
        np.testing.assert_array_equal(g.numpy(), e.numpy())
    # the values themselves, against SciPy (float64)
    if kw.get("channel_axis") is None:
        full = np.array([[signal.correlate(a.astype(np.float64), f.astype(np.float64), mode=kw["mode"])
                          for f in fi] for a in im])
    else:
        full = np.array([[sum(signal.correlate(a[..., c].astype(np.float64), f[..., c].astype(np.float64),
                                               mode=kw["mode"]) for c in range(2)) for f in fi] for a in im])
    if kw.get("reduce") is None:
        np.testing.assert_allclose(eager[0].numpy(), full, rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(eager[0].numpy(), full.reshape(2, 3, -1).max(-1), rtol=1e-4, atol=1e-4)


def test_correlate_batch_float64_graph_dtype():
    _require("numvox.correlate", "correlate_batch")
    im = np.random.default_rng(10).normal(size=(2, 6, 6))
    fi = np.random.default_rng(11).normal(size=(1, 3, 3)).astype(np.float32)
    graph, traced = _graph(ntf.correlate_batch, tf.constant(im), tf.constant(fi))
    assert traced.dtype == tf.float64 and _static(traced) == (2, 1, 6, 6)


# ---- pac_conv ------------------------------------------------------------------------------


def _pac_inputs(rng, d=2):
    S = (7, 6) if d == 2 else (5, 4, 6)
    x = rng.normal(size=(2, *S, 3)).astype(np.float32)
    g = rng.normal(size=(2, *S, 2)).astype(np.float32)
    w = (rng.normal(size=(3,) * d + (3, 4)) * 0.3).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    return x, g, w, b


@pytest.mark.parametrize("stride,padding,dilation", [(1, "same", 1), (2, "valid", 1), (1, 1, 2)])
def test_pac_conv_eager_graph_and_reference(stride, padding, dilation):
    _require("numvox.pac", "pac_conv", "pac_conv_backward")
    rng = np.random.default_rng(12)
    x, g, w, b = _pac_inputs(rng)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    eager = ntf.pac_conv(tf.constant(x), tf.constant(g), tf.constant(w), tf.constant(b), **kw)
    graph, traced = _graph(ntf.pac_conv, tf.constant(x), tf.constant(g), tf.constant(w), tf.constant(b), **kw)
    assert _static(traced) == tuple(eager.shape) and traced.dtype == tf.float32
    pad = {"same": 1 * dilation, "valid": 0}.get(padding, padding) if isinstance(padding, str) else padding
    ref = ref_pac(x, g, w, b, stride, pad, dilation, False)
    np.testing.assert_allclose(eager.numpy(), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(graph.numpy(), eager.numpy(), rtol=1e-6, atol=1e-6)


def test_pac_conv_3d_static_shape():
    _require("numvox.pac", "pac_conv")
    x, g, w, b = _pac_inputs(np.random.default_rng(13), d=3)
    sig = [tf.TensorSpec([None, 5, 4, 6, 3]), tf.TensorSpec([None, 5, 4, 6, 2]), tf.TensorSpec(w.shape)]
    out, traced = _graph(ntf.pac_conv, tf.constant(x), tf.constant(g), tf.constant(w), signature=sig, stride=2)
    assert _static(traced) == (None, 3, 2, 3, 4) and out.shape == (2, 3, 2, 3, 4)


@pytest.mark.parametrize("in_graph", [False, True])
def test_pac_conv_gradients(in_graph):
    _require("numvox.pac", "pac_conv", "pac_conv_backward")
    rng = np.random.default_rng(14)
    x, g, w, b = (tf.constant(a, tf.float64) for a in _pac_inputs(rng))
    up = tf.constant(rng.normal(size=(2, 7, 6, 4)))

    def loss_and_grads(x, g, w, b):
        with tf.GradientTape() as tape:
            tape.watch([x, g, w, b])
            loss = tf.reduce_sum(ntf.pac_conv(x, g, w, b) * up)
        return loss, tape.gradient(loss, [x, g, w, b])

    fn = tf.function(loss_and_grads) if in_graph else loss_and_grads
    loss, grads = fn(x, g, w, b)
    # central finite differences of the float64 reference along a random direction per input
    xs, gs, ws, bs = (a.numpy() for a in (x, g, w, b))
    for i, grad in enumerate(grads):
        direction = rng.normal(size=grad.shape)
        eps = 1e-5
        args_p = [xs, gs, ws, bs]
        args_m = [xs, gs, ws, bs]
        args_p = [a + eps * direction if k == i else a for k, a in enumerate(args_p)]
        args_m = [a - eps * direction if k == i else a for k, a in enumerate(args_m)]
        fd = ((ref_pac(*args_p, 1, 1, 1, False) - ref_pac(*args_m, 1, 1, 1, False)) * up.numpy()).sum() / (2 * eps)
        np.testing.assert_allclose((grad.numpy() * direction).sum(), fd, rtol=1e-5, atol=1e-7)


# ---- Keras ---------------------------------------------------------------------------------


def test_keras_model_whose_last_step_is_a_numvox_op():
    _require("numvox.votes", "aggregate_votes")
    import keras

    n_lm = 2
    inp = keras.Input((8, 8, 8, 1))
    h = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(inp)
    probs = keras.layers.Conv3D(n_lm + 1, 1, activation="softmax")(h)
    offsets = keras.layers.Conv3D(3 * n_lm, 1)(h)
    heat = ntf.NumvoxLayer("aggregate_votes", threshold=0.3, splat="linear")([probs, offsets])
    model = keras.Model(inp, heat)
    assert tuple(model.output.shape) == (None, n_lm, 8, 8, 8)
    heads = keras.Model(inp, [probs, offsets])
    x = np.random.default_rng(15).normal(size=(2, 8, 8, 8, 1)).astype(np.float32)
    p, o = (np.asarray(a) for a in heads(x))
    expected = np.stack([ntf.aggregate_votes(p[i], o[i], threshold=0.3, splat="linear").numpy() for i in range(2)])
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)  # graph mode


def test_keras_layer_under_mixed_float16_policy():
    _require("numvox.votes", "aggregate_votes")
    import keras

    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inp = keras.Input((8, 8, 8, 1))
        probs = keras.layers.Conv3D(3, 1, activation="softmax")(inp)  # float16 outputs
        offsets = keras.layers.Conv3D(6, 1)(inp)
        assert probs.dtype == "float16"
        heat = ntf.NumvoxLayer("aggregate_votes", threshold=0.4)([probs, offsets])
        model = keras.Model(inp, heat)
        out = model.predict(np.random.default_rng(16).normal(size=(1, 8, 8, 8, 1)).astype(np.float32), verbose=0)
        assert out.shape == (1, 2, 8, 8, 8) and np.isfinite(out).all()
    finally:
        keras.mixed_precision.set_global_policy(old)


def test_numvox_layer_rejects_unknown_op():
    with pytest.raises(ValueError, match="op must be one of"):
        ntf.NumvoxLayer("nope")


# ---- backends (the cuda case runs the CUDA kernels in Numba's simulator) ---------------------


def test_backend_passes_through_eager_and_graph(backend):
    """numvox.tf hands ``backend=`` to the op in both modes; results agree with the reference."""
    _require("numvox.votes", "aggregate_votes", "heatmap_peaks")
    rng = np.random.default_rng(17)
    p, o = _votes_inputs(rng, shape=(4, 3, 3), n_lm=1)
    P, O = tf.constant(p), tf.constant(o)
    ref = ref_votes(p, o, 0.5)[0]
    eager = ntf.aggregate_votes(P, O, backend=backend)
    graph, traced = _graph(ntf.aggregate_votes, P, O, backend=backend)
    assert _static(traced) == (1, 4, 3, 3)
    np.testing.assert_allclose(eager.numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(graph.numpy(), ref, atol=1e-5)
    c, v = ntf.heatmap_peaks(eager, backend=backend)
    assert c.shape == (1, 3) and v.shape == (1,)
