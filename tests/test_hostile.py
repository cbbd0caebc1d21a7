"""Every input a user can hold, against every public function: the right answer or a clear
error (TypeError / ValueError / MemoryError naming the argument), never a crash or garbage.

Crash-prone cases (TensorFlow string tensors, absurd allocations) run in a subprocess, so an
abort fails the test instead of killing pytest.  Real data: nibabel's bundled MRI volumes, one
of them big-endian (``anatomical.nii`` is ``>i2``).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import SIMULATED
from hypothesis import given
from hypothesis import strategies as st
from reference import ref_basins, ref_labels, ref_labels_exact, ref_peaks

import numvox


def _rng():
    return np.random.default_rng(11)


def _problems():
    """public name -> (array arguments by name, keyword options): small valid inputs."""
    rng = _rng()
    f32 = np.float32
    return {
        "aggregate_votes": ({"probs": rng.random((4, 3, 3, 3)).astype(f32),
                             "offsets": rng.normal(size=(4, 3, 3, 6)).astype(f32)}, {"threshold": 0.4}),
        "heatmap_peaks": ({"heatmaps": rng.random((2, 4, 3, 3)).astype(f32)}, {}),
        "descent_labels": ({"volume": rng.integers(0, 6, (4, 3, 5)).astype(f32)}, {}),
        "descent_basins": ({"volume": rng.integers(0, 6, (4, 3, 5)).astype(f32)}, {}),
        "correlate_batch": ({"images": rng.normal(size=(2, 5, 4)).astype(f32),
                             "filters": rng.normal(size=(3, 3, 2)).astype(f32)}, {}),
        "pac_conv": ({"x": rng.normal(size=(1, 5, 4, 2)).astype(f32),
                      "guide": rng.normal(size=(1, 5, 4, 2)).astype(f32),
                      "weight": rng.normal(size=(3, 3, 2, 3)).astype(f32)}, {}),
        "pac_conv_backward": ({"grad_out": rng.normal(size=(1, 5, 4, 3)).astype(f32),
                               "x": rng.normal(size=(1, 5, 4, 2)).astype(f32),
                               "guide": rng.normal(size=(1, 5, 4, 2)).astype(f32),
                               "weight": rng.normal(size=(3, 3, 2, 3)).astype(f32)}, {}),
    }


PROBLEMS = _problems()
ARGUMENTS = [(name, arg) for name, (arrays, _) in PROBLEMS.items() for arg in arrays]


def _call(name, arrays, opts, **extra):
    return getattr(numvox, name)(**arrays, **opts, **extra)


def _as_list(result):
    return [np.asarray(r) for r in (result if isinstance(result, tuple) else (result,))]


# -- objects that are no array, None, dtypes no kernel reads ----------------------------------


@pytest.mark.parametrize("name,arg", ARGUMENTS)
@pytest.mark.parametrize("bad", [None, object(), {"a": 1}, "abc", b"xy"],
                         ids=["None", "object", "dict", "str", "bytes"])
def test_non_arrays_raise_typeerror_naming_the_argument(name, arg, bad):
    arrays, opts = PROBLEMS[name]
    with pytest.raises(TypeError, match=arg):
        _call(name, {**arrays, arg: bad}, opts)


@pytest.mark.parametrize("name,arg", ARGUMENTS)
@pytest.mark.parametrize("dtype", [object, "U3", np.complex64, "datetime64[s]", [("a", "f4"), ("b", "i4")]],
                         ids=["object", "str", "complex", "datetime", "structured"])
def test_unreadable_dtypes_raise_typeerror_naming_the_argument(name, arg, dtype):
    arrays, opts = PROBLEMS[name]
    bad = np.zeros(arrays[arg].shape, dtype=dtype)
    with pytest.raises(TypeError, match=arg):
        _call(name, {**arrays, arg: bad}, opts)


def test_ragged_sequence_raises_typeerror():
    with pytest.raises(TypeError, match="volume"):
        numvox.descent_labels([[[1, 2]], [[1]]])


# -- byte order ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_big_endian_inputs_give_the_native_result(name, backend):
    arrays, opts = PROBLEMS[name]
    want = _as_list(_call(name, arrays, opts, backend=backend))
    swapped = {k: a.astype(a.dtype.newbyteorder(">")) for k, a in arrays.items()}
    assert all(not a.dtype.isnative for a in swapped.values())
    got = _as_list(_call(name, swapped, opts, backend=backend))
    for g, w in zip(got, want):
        if backend == "cuda" and g.dtype.kind == "f":  # float atomics: summation order varies per run
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(g, w)


def test_big_endian_float64_direct_correlation_after_a_native_call():
    """A non-native call after a native one in the same process reuses no wrong specialisation."""
    rng = _rng()
    im, fi = rng.normal(size=(2, 6, 5)), rng.normal(size=(2, 3, 3))
    want = numvox.correlate_batch(im, fi, method="direct")
    got = numvox.correlate_batch(im.astype(">f8"), fi.astype(">f8"), method="direct")
    np.testing.assert_array_equal(got, want)


# -- out= ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [[0.0] * 4, 3.0, "out"], ids=["list", "scalar", "str"])
def test_out_that_is_no_array_raises_typeerror(bad):
    vol = PROBLEMS["descent_labels"][0]["volume"]
    with pytest.raises(TypeError, match="out"):
        numvox.descent_labels(vol, out=bad)
    probs, offsets = PROBLEMS["aggregate_votes"][0].values()
    with pytest.raises(TypeError, match="out"):
        numvox.aggregate_votes(probs, offsets, out=bad)


def test_out_sharing_memory_with_an_input_is_refused():
    vol = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="shares memory"):
        numvox.descent_labels(vol, out=vol)
    probs = np.zeros((2, 3, 3, 3, 2), np.float32)
    offsets = np.zeros((2, 3, 3, 3, 3), np.float32)
    heat_view = probs[..., :1].reshape(-1)[:54].reshape(2, 1, 3, 3, 3)  # a view into probs
    if heat_view.flags.c_contiguous:
        with pytest.raises(ValueError, match="shares memory"):
            numvox.aggregate_votes(probs, offsets, out=heat_view)


# -- numbers that do not fit ---------------------------------------------------------------------


def test_python_numbers_too_large_raise_valueerror():
    probs, offsets = PROBLEMS["aggregate_votes"][0].values()
    with pytest.raises(ValueError, match="threshold"):
        numvox.aggregate_votes(probs, offsets, threshold=10**400)
    heat = PROBLEMS["heatmap_peaks"][0]["heatmaps"]
    np.testing.assert_array_equal(numvox.heatmap_peaks(heat, radius=10**30)[0],  # the whole volume
                                  numvox.heatmap_peaks(heat, radius=4)[0])
    arrays, _ = PROBLEMS["pac_conv"]
    for key in ("stride", "padding", "dilation"):
        with pytest.raises(ValueError, match=key):
            numvox.pac_conv(**arrays, **{key: 10**30})


def _subprocess(code, limit_gib=None):
    """Run ``code`` in a fresh interpreter (optionally under an address-space limit)."""
    pre = ""
    if limit_gib:
        pre = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit_gib << 30}, {limit_gib << 30}))\n"
    return subprocess.run([sys.executable, "-c", pre + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_absurd_pac_geometry_is_refused_before_allocating():
    proc = _subprocess("""
        import numpy as np, numvox
        x = np.zeros((1, 5, 2, 1), np.float32); g = np.zeros((1, 5, 2, 1), np.float32)
        w = np.zeros((3, 3, 1, 1), np.float32)
        for kw in (dict(padding=200_000, stride=1), dict(padding=(10**6, 0), stride=(1, 1)),
                   dict(padding=50_000, stride=1, dilation=2)):
            try:
                numvox.pac_conv(x, g, w, **kw)
            except (ValueError, MemoryError) as exc:
                print("refused:", type(exc).__name__, exc)
            else:
                print("computed", kw)
    """, limit_gib=6)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and all(ln.startswith(("refused:", "computed")) for ln in lines), proc.stdout


# -- TensorFlow objects ----------------------------------------------------------------------------


def test_tensorflow_string_and_quantised_tensors_raise_typeerror():
    pytest.importorskip("tensorflow")
    proc = _subprocess("""
        import tensorflow as tf, numvox, numvox.tf as ntf
        cases = [lambda: numvox.descent_labels(tf.constant([[["a"]]])),
                 lambda: ntf.descent_labels(tf.constant([[["a"]]])),
                 lambda: numvox.descent_labels(tf.quantization.quantize(tf.zeros((2, 2, 2)), 0.0, 1.0, tf.qint8)[0]),
                 lambda: numvox.descent_labels(tf.complex(tf.zeros((2, 2, 2)), tf.zeros((2, 2, 2))))]
        for case in cases:
            try:
                case()
            except TypeError as exc:
                print("TypeError:", exc)
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4 and all("volume" in ln for ln in lines), proc.stdout


# -- extreme values --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_descent_labels_exact_for_64_bit_integers_far_from_zero(dtype, backend):
    rng = np.random.default_rng(3)
    base = 2**62 if dtype == np.int64 else 2**63 + 2**62
    v = (np.array(base, dtype) + rng.integers(0, 4, (4, 5, 3)).astype(dtype)).astype(dtype)
    np.testing.assert_array_equal(numvox.descent_labels(v, backend=backend), ref_labels_exact(v))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_descent_labels_right_for_floats_near_the_dtype_maximum(dtype, backend):
    rng = np.random.default_rng(4)
    big = np.finfo(dtype).max
    v = (rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], (4, 5, 3)) * big).astype(dtype)
    np.testing.assert_array_equal(numvox.descent_labels(v, backend=backend), ref_labels_exact(v))


@given(st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_descent_labels_extreme_values_hypothesis(dtype, seed):
    rng = np.random.default_rng(seed)
    finfo = np.finfo(dtype)
    pool = np.array([0.0, 1.0, -1.0, finfo.max, -finfo.max, finfo.max / 2, finfo.tiny, -finfo.tiny], dtype)
    v = rng.choice(pool, (3, 4, 3)).astype(dtype)
    np.testing.assert_array_equal(numvox.descent_labels(v), ref_labels_exact(v))


def test_heatmap_peaks_finite_for_positive_infinite_or_huge_maxima(backend):
    h = np.zeros((3, 5, 5, 5), np.float32)
    h[0, 2, 3, 1] = np.inf                      # an infinite maximum: its position
    h[1, 1:4, 1:4, 1:4] = 3e38                  # weighted sums overflow float32
    h[1, 2, 2, 2] = np.finfo(np.float32).max
    h[2, 4, 0, 2] = 1e30                        # huge but alone
    coords, values = (np.asarray(a) for a in numvox.heatmap_peaks(h, radius=1, backend=backend))
    assert np.all(np.isfinite(coords)), coords
    np.testing.assert_allclose(coords[0], [2, 3, 1])
    np.testing.assert_allclose(coords[1], [2, 2, 2], atol=1e-6)
    np.testing.assert_allclose(coords[2], [4, 0, 2])
    assert values[0] == np.inf
    ref_c, _ = ref_peaks(h[2:], 1)
    np.testing.assert_allclose(coords[2:], ref_c)


@pytest.mark.parametrize("shape", [(2, 0, 3, 3), (2, 3, 0, 3), (0, 3, 3, 3)])
def test_heatmap_peaks_empty_axes_agree_on_both_backends(shape, backend):
    coords, values = (np.asarray(a) for a in numvox.heatmap_peaks(np.zeros(shape, np.float32), backend=backend))
    assert coords.shape == shape[:-3] + (3,) and values.shape == shape[:-3]
    assert np.all(np.isnan(coords)) and np.all(np.isnan(values))


# -- Keras layer arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(filters=2, kernel_size=-3), "kernel_size"),
    (dict(filters=0, kernel_size=3), "filters"),
    (dict(filters=2.5, kernel_size=3), "filters"),
    (dict(filters=2, kernel_size=3, strides=0), "strides"),
    (dict(filters=2, kernel_size=3, dilation_rate=(1, -1)), "dilation_rate"),
    (dict(filters=2, kernel_size=3, padding=-1), "padding"),
    (dict(filters=2, kernel_size=3, backend="gpu"), "backend"),
])
def test_keras_layer_arguments_are_checked(kwargs, match):
    pytest.importorskip("tensorflow")
    import numvox.keras

    with pytest.raises((ValueError, TypeError), match=match):
        numvox.keras.PacConv2D(**kwargs)


# -- Dask ----------------------------------------------------------------------------------------------


def test_dask_inputs_follow_the_same_policy():
    da = pytest.importorskip("dask.array")
    vol = PROBLEMS["descent_labels"][0]["volume"]
    want = numvox.descent_labels(vol)
    big = da.from_array(vol.astype(">f4"), chunks=2)
    np.testing.assert_array_equal(numvox.descent_labels(big).compute(), want)
    with pytest.raises(TypeError, match="volume"):
        numvox.descent_labels(da.from_array(np.zeros((3, 3, 3), complex), chunks=2))


# -- real data: nibabel's MRI volumes -------------------------------------------------------------------


def _nibabel_volume(name):
    nib = pytest.importorskip("nibabel")
    path = os.path.join(os.path.dirname(nib.__file__), "tests", "data", name)
    if not os.path.exists(path):
        pytest.skip(f"nibabel ships no {name}")
    img = nib.load(path)
    return img, np.asanyarray(img.dataobj)


def test_nifti_big_endian_volume_through_labels_basins_and_votes(tmp_path):
    import nibabel as nib

    img, vol = _nibabel_volume("anatomical.nii")
    assert vol.dtype == np.dtype(">i2")  # the point of this test: real big-endian data
    native = vol.astype(np.int16)
    labels = numvox.descent_labels(vol)
    np.testing.assert_array_equal(labels, ref_labels(native))
    basins = numvox.descent_basins(vol)
    np.testing.assert_array_equal(basins, ref_basins(native))
    # votes: every voxel above the median votes for itself, weighted by its intensity
    v = vol.astype(">f4") / float(native.max())
    probs = np.stack([1 - v, v], axis=-1).astype(">f4")
    offsets = np.zeros(vol.shape + (3,), ">f4")
    heat = numvox.aggregate_votes(probs, offsets, threshold=float(np.median(v)))
    want = np.where(v >= np.median(v), v, 0).astype(np.float32)
    np.testing.assert_allclose(heat[0], want, rtol=1e-6)
    # and back to a NIfTI file, read again
    out = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(labels), img.affine), out)
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), labels)


@pytest.mark.skipif(SIMULATED, reason="real data sizes: CPU only")
def test_nifti_4d_volume_frames_through_labels():
    _, vol = _nibabel_volume("example4d.nii.gz")
    frame = np.ascontiguousarray(vol[..., 0])
    np.testing.assert_array_equal(numvox.descent_labels(frame), ref_labels(frame))


# -- numvox.tf: the same policy, eagerly and in graphs -------------------------------------------------


@pytest.mark.parametrize("name,arg", [("descent_labels", "volume"), ("aggregate_votes", "offsets"),
                                      ("pac_conv", "weight"), ("correlate_batch", "filters")])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_numvox_tf_refuses_bad_inputs_with_typeerror(name, arg, graph):
    tf = pytest.importorskip("tensorflow")
    import numvox.tf as ntf

    arrays, opts = PROBLEMS[name]
    op = getattr(ntf, name)
    for bad in (None, object(), tf.constant(np.zeros(arrays[arg].shape, np.complex64))):
        call = {**arrays, arg: bad}
        with pytest.raises(TypeError, match=arg):
            if graph:
                good = {k: tf.constant(v) for k, v in arrays.items() if k != arg}
                tf.function(lambda: op(**good, **{arg: bad}, **opts))()
            else:
                op(**call, **opts)


def test_numvox_tf_reads_big_endian_arrays():
    pytest.importorskip("tensorflow")
    import numvox.tf as ntf

    vol = PROBLEMS["descent_labels"][0]["volume"]
    np.testing.assert_array_equal(ntf.descent_labels(vol.astype(">f4")).numpy(), numvox.descent_labels(vol))
