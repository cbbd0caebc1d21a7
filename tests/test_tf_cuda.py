"""numvox.tf and numvox.keras on the CUDA route, compared with the CPU route.

The ``cuda`` tests run on a real GPU, or under Numba's CUDA simulator in the README's second
pytest run (``NUMBA_ENABLE_CUDASIM=1``), where the CUDA kernels run on host tensors: that
exercises the whole route (graph node, conversion, kernels, shapes, gradients) without a GPU.
"""

import numpy as np
import pytest
from conftest import SIMULATED

tf = pytest.importorskip("tensorflow")
ntf = pytest.importorskip("numvox.tf")
keras = pytest.importorskip("keras")

import numvox  # noqa: E402
import numvox.keras  # noqa: E402
from numvox._shared.backend import cuda_usable  # noqa: E402


def _inputs(name, rng):
    """Small float32 inputs (the simulator is slow) for each op of numvox.tf."""
    if name in ("aggregate_votes",):
        p = rng.random((4, 3, 3, 3)).astype(np.float32)
        o = (rng.normal(size=(4, 3, 3, 6)) * 2).astype(np.float32)
        return [p, o], {"threshold": 0.4}
    if name == "heatmap_peaks":
        return [rng.random((2, 4, 3, 3)).astype(np.float32)], {"radius": 1}
    if name in ("descent_labels", "descent_basins"):
        return [rng.integers(0, 5, (4, 3, 5)).astype(np.float32)], {}
    if name == "correlate_batch":
        return [rng.normal(size=(2, 5, 4)).astype(np.float32), rng.normal(size=(3, 3, 2)).astype(np.float32)], \
            {"mode": "same"}
    x = rng.normal(size=(1, 5, 4, 2)).astype(np.float32)
    g = rng.normal(size=(1, 5, 4, 2)).astype(np.float32)
    w = (rng.normal(size=(3, 3, 2, 3)) * 0.3).astype(np.float32)
    if name.startswith("pac_pool"):
        head = [rng.normal(size=(1, 5, 4, 2)).astype(np.float32)] if name.endswith("_backward") else []
        return head + [x, g], {"kernel_size": 3, "padding": 1, "normalize": True}
    if name.startswith("pac_conv_transpose"):  # 3x2 -> 5x4
        xs, ws = x[:, :3, :2], (rng.normal(size=(3, 4, 2, 3)) * 0.3).astype(np.float32)
        opts = {"stride": 2, "padding": 1}
        if name.endswith("_backward"):
            return [rng.normal(size=(1, 5, 4, 3)).astype(np.float32), xs, g, ws], opts
        return [xs, g, ws, rng.normal(size=(3,)).astype(np.float32)], opts
    if name == "pac_conv":
        return [x, g, w, rng.normal(size=(3,)).astype(np.float32)], {"padding": "same"}
    dy = rng.normal(size=(1, 5, 4, 3)).astype(np.float32)
    return [dy, x, g, w], {"padding": "same"}


def _as_list(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    if a.dtype.kind == "f":
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(ntf.OPS))
def test_every_op_on_the_cuda_route_equals_the_cpu_route(cuda_backend, name):
    """Eager and tf.function with backend="cuda" equal the CPU route, with the same static shapes."""
    arrays, opts = _inputs(name, np.random.default_rng(1))
    tensors = [tf.constant(a) for a in arrays]
    op = getattr(ntf, name)
    want = [r.numpy() for r in _as_list(op(*tensors, backend="cpu", **opts))]
    eager = _as_list(op(*tensors, backend=cuda_backend, **opts))
    traced = []

    @tf.function
    def graph(*ts):
        out = op(*ts, backend=cuda_backend, **opts)
        traced.extend(_as_list(out))
        return out

    got = _as_list(graph(*tensors))
    cpu_traced = []

    @tf.function
    def graph_cpu(*ts):
        out = op(*ts, backend="cpu", **opts)
        cpu_traced.extend(_as_list(out))
        return out

    graph_cpu(*tensors)
    for w, e, g, t, c in zip(want, eager, got, traced, cpu_traced):
        _close(e.numpy(), w)
        _close(g.numpy(), w)
        assert t.shape.as_list() == c.shape.as_list() == list(w.shape)
        assert t.dtype == c.dtype


@pytest.mark.cuda
@pytest.mark.parametrize("in_graph", [False, True])
def test_pac_gradients_on_the_cuda_route_equal_the_cpu_route(cuda_backend, in_graph):
    x, g, w, b = (tf.constant(a) for a in _inputs("pac_conv", np.random.default_rng(2))[0])
    up = tf.constant(np.random.default_rng(3).normal(size=(1, 5, 4, 3)).astype(np.float32))

    def grads(backend):
        def run():
            with tf.GradientTape() as tape:
                tape.watch([x, g, w, b])
                out = ntf.pac_conv(x, g, w, b, normalize=True, backend=backend)
                loss = tf.reduce_sum(out * up)
            return tape.gradient(loss, [x, g, w, b])

        return (tf.function(run) if in_graph else run)()

    for got, want in zip(grads(cuda_backend), grads("cpu")):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def _pac_model(backend, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((6, 6, 1))
    g = keras.Input((6, 6, 1))
    h = numvox.keras.PacConv2D(2, 3, normalize=True, backend=backend, name="pac1")([x, g])
    h = keras.layers.Activation("relu")(h)
    y = numvox.keras.PacConv2D(1, 3, backend=backend, name="pac2")([h, g])
    model = keras.Model([x, g], y)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


@pytest.mark.cuda
@pytest.mark.parametrize("layer", [numvox.keras.PacConv2D, numvox.keras.PacConv3D])
def test_keras_pac_layers_forced_to_cuda_match_cpu(cuda_backend, layer):
    d = 2 if layer is numvox.keras.PacConv2D else 3
    rng = np.random.default_rng(4)
    shape = (1,) + (4,) * d
    x = tf.constant(rng.normal(size=shape + (2,)).astype(np.float32))
    g = tf.constant(rng.normal(size=shape + (1,)).astype(np.float32))
    results = []
    for backend in ("cpu", cuda_backend):
        lay = layer(2, 3, normalize=True, backend=backend)
        lay.build([x.shape, g.shape])
        lay.kernel.assign(np.linspace(-1, 1, int(np.prod(lay.kernel.shape))).reshape(lay.kernel.shape))
        with tf.GradientTape() as tape:
            out = lay([x, g])
            loss = tf.reduce_sum(out * out)
        results.append([out.numpy()] + [t.numpy() for t in tape.gradient(loss, lay.trainable_weights)])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_keras_model_with_cuda_pac_layers_trains_like_the_cpu_model(cuda_backend):
    rng = np.random.default_rng(5)
    n = 4 if SIMULATED else 8
    x = rng.normal(size=(n, 6, 6, 1)).astype(np.float32)
    g = rng.normal(size=(n, 6, 6, 1)).astype(np.float32)
    y = (0.5 * x).astype(np.float32)
    losses, weights = [], []
    for backend in ("cpu", cuda_backend):
        model = _pac_model(backend)
        hist = model.fit([x, g], y, epochs=2, batch_size=n, verbose=0, shuffle=False)
        losses.append(hist.history["loss"])
        weights.append([w.numpy() for w in model.weights])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    for got, want in zip(weights[1], weights[0]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_cuda_route_reads_tensorflow_buffers_in_place(cuda_backend, monkeypatch):
    """Under the simulator the CUDA kernels run on host arrays: those are TF's own buffers."""
    if not SIMULATED:
        pytest.skip("pointer check of host buffers: simulator only (a GPU has its own test in benchmarks)")
    from numvox._shared import arrays

    seen = []
    to_host = arrays.to_host

    def spy(obj, kind=None):
        res = to_host(obj, kind)
        seen.append(res.__array_interface__["data"][0])
        return res

    monkeypatch.setattr(arrays, "to_host", spy)
    (vol,), _ = _inputs("descent_labels", np.random.default_rng(6))
    V = tf.constant(vol)
    ntf.descent_labels(V, backend=cuda_backend)
    assert seen == [np.from_dlpack(V).__array_interface__["data"][0]]


def test_forcing_cuda_without_a_gpu_raises_cuda_unavailable_from_the_graph():
    if cuda_usable():
        pytest.skip("CUDA kernels can run here")
    V = tf.constant(np.zeros((3, 3, 3), np.float32))

    @tf.function
    def graph(v):
        return ntf.descent_labels(v, backend="cuda")

    with pytest.raises(numvox.CudaUnavailableError):
        graph(V)
    with pytest.raises(numvox.CudaUnavailableError):
        numvox.keras.PacConv2D(1, 3, backend="cuda")([tf.zeros((1, 4, 4, 1)), tf.zeros((1, 4, 4, 1))])


@pytest.mark.cuda
@pytest.mark.parametrize("make,guide_side", [
    (lambda backend: numvox.keras.PacConvTranspose2D(2, 3, strides=2, normalize=True, backend=backend), 7),
    (lambda backend: numvox.keras.PacPool2D(3, padding=1, normalize=True, backend=backend), 3),
], ids=["PacConvTranspose2D", "PacPool2D"])
def test_keras_transposed_and_pooling_layers_forced_to_cuda_match_cpu(cuda_backend, make, guide_side):
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(1, 3, 3, 2)).astype(np.float32))
    g = tf.constant(rng.normal(size=(1, guide_side, guide_side, 1)).astype(np.float32))
    results = []
    for backend in ("cpu", cuda_backend):
        lay = make(backend)
        lay.build([x.shape, g.shape])
        for v in lay.trainable_weights:
            v.assign(np.linspace(-1, 1, int(np.prod(v.shape))).reshape(v.shape))
        with tf.GradientTape() as tape:
            tape.watch([x, g])
            out = lay([x, g])
            loss = tf.reduce_sum(out * out)
        grads = tape.gradient(loss, [x, g] + list(lay.trainable_weights))
        results.append([out.numpy()] + [t.numpy() for t in grads])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
