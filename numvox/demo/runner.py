"""``numvox demo``: phantom → landmark model → ``aggregate_votes`` → ``heatmap_peaks`` → report.

The model stage runs the bundled U-Net (:mod:`numvox.demo.model`) when TensorFlow is
importable, or else the synthetic stand-in of :mod:`numvox.demo.standin`.  With
TensorFlow, the model's output tensors go into numvox as they are (DLPack: no copy on the
way in, see :mod:`numvox.tf`).
"""

import glob
import importlib.util
import os
import re
import sys
import tempfile
import time

import numpy as np

from .phantom import DEFAULT_RADIUS, DEFAULT_SHAPE, LANDMARK_NAMES, generate_phantom


def tensorflow_available():
    """True when TensorFlow can be imported (checked without importing it)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


# TensorFlow's C++ log levels (TF_CPP_MIN_LOG_LEVEL) and the letters that start its lines
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_LOG_LINE = re.compile(r"^([IWEF])\d{4} ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _nvidia_device_present():
    """True when the machine shows an NVIDIA GPU (Linux device nodes, or WSL's GPU bridge)."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/dxg")


def _tensorflow_log_lines(text, level):
    """The lines of TensorFlow's start-up output at or above ``level`` (see quiet_tensorflow_logs)."""
    keep, shown = [], True
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == _ABSL_PREAMBLE:
            continue
        m = _LOG_LINE.match(line)
        if m:
            shown = _SEVERITY[m.group(1)] >= level
        if shown:  # a line that starts no record continues the previous one
            keep.append(line)
    return "".join(keep)


def quiet_tensorflow_logs():
    """Import TensorFlow with its C++ log held to ``TF_CPP_MIN_LOG_LEVEL``, which the demo sets.

    Unless the user set ``TF_CPP_MIN_LOG_LEVEL``, the demo sets it to 3 (fatal errors only)
    on a machine without an NVIDIA GPU, where TensorFlow's only messages are start-up notes
    and ``failed call to cuInit`` (there is no GPU to find), and to 2 (errors) where a GPU
    is present, so that a GPU TensorFlow cannot use is still reported.

    TensorFlow 2.20 and later log a few lines while being imported, before their logger is
    set up (``WARNING: All log messages before absl::InitializeLog()...`` and the oneDNN
    note), and those ignore the variable.  So the import runs with the process's stderr
    (file descriptor 2) captured, and what TensorFlow wrote is then passed on to stderr
    without the records below the level and without that preamble; every other line
    (Python warnings, tracebacks) passes unchanged.  Does nothing when TensorFlow is
    already imported.
    """
    if "tensorflow" in sys.modules:
        return
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2" if _nvidia_device_present() else "3"
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        level = 0
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            capture.seek(0)
            text = _tensorflow_log_lines(capture.read().decode("utf-8", "replace"), level)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


_MODEL = []


def bundled_model():
    """The bundled model and its metadata, loaded once per process."""
    if not _MODEL:
        from .model import load_bundled_model

        _MODEL.append(load_bundled_model())
    return _MODEL[0]


def _run_model(volume):
    """Bundled model on one volume: (probs, offsets) as TF tensors, load and run times."""
    t0 = time.perf_counter()
    import tensorflow as tf

    from .model import size_multiple

    model, meta = bundled_model()
    t_load = time.perf_counter() - t0
    m = size_multiple(meta["config"])
    pad = [(0, (-s) % m) for s in volume.shape]
    x = np.pad(volume, pad) if any(p[1] for p in pad) else volume
    t0 = time.perf_counter()
    probs, offsets = model(tf.constant(x[None, ..., None], tf.float32), training=False)
    if any(p[1] for p in pad):  # a TF slice is a copy; only padded user volumes pay it
        X, Y, Z = volume.shape
        probs, offsets = probs[:, :X, :Y, :Z], offsets[:, :X, :Y, :Z]
    # Batch 1 kept: numvox takes the (B, X, Y, Z, C) outputs as they are (no squeeze copy).
    t_model = time.perf_counter() - t0
    return probs, offsets, t_load, t_model, meta


def run_demo(seed=0, volume=None, *, use_model=None, threshold=0.5, splat="linear", radius=1,
             out_dir=".", png=True, shape=DEFAULT_SHAPE, log=None):
    """Run the demo once and return its result dict.

    Parameters
    ----------
    seed : int
        Phantom seed (ignored when ``volume`` is given).
    volume : ndarray or None
        A user volume ``(X, Y, Z)``; the bundled model then runs on it (needs TensorFlow)
        and there are no true positions.  Intensities are used as they are: the model was
        trained on phantoms with intensities in about [0, 1].
    use_model : bool or None
        True: the bundled model (TensorFlow required); False: the stand-in; None: the model
        when TensorFlow is importable.
    threshold, splat, radius
        Passed to ``aggregate_votes`` / ``heatmap_peaks``.
    out_dir : str
        Where the PNG goes.
    png : bool
        Write the PNG (when matplotlib is importable).
    shape : tuple of 3 ints
        Phantom shape (ignored when ``volume`` is given).  The anatomy keeps the size the
        model was trained at (32³), so a larger shape is a larger field of view.
    log : callable or None
        Takes the demo's notes (such as "matplotlib is not installed"); None prints them to
        stderr, so that stdout carries only what the caller prints.

    Returns
    -------
    dict
        ``landmarks`` (list of ``{"name", "true", "found", "error_voxels", "peak"}``),
        ``timings_s`` (``model``, ``votes``, ``peaks``, plus ``phantom``, ``model_load``,
        ``votes_first_call``, ``peaks_first_call``), ``mean_error_voxels``, ``mode``
        (``"model"`` or ``"stand-in"``), ``png`` (path or None) and ``shape``.
    """
    import numvox

    if log is None:
        log = _to_stderr
    timings = {}
    if use_model is None:
        use_model = tensorflow_available()
    if volume is None:
        t0 = time.perf_counter()
        volume, true = generate_phantom(seed, shape, scale=min(1.0, min(shape) / DEFAULT_SHAPE[0]))
        timings["phantom"] = time.perf_counter() - t0
        label = f"phantom seed {seed}"
    else:
        volume = np.asarray(volume)
        if volume.ndim != 3 or min(volume.shape) < 1:
            raise ValueError(f"volume must be a 3-D array; got shape {volume.shape}")
        if volume.dtype.kind not in "fiu":
            raise TypeError(f"volume has dtype {volume.dtype}; expected a real numeric dtype")
        if not np.isfinite(volume).all():
            raise ValueError("volume contains NaN or infinite values")
        if not use_model:
            raise ValueError("--volume needs the model, which needs TensorFlow (pip install 'numvox[tf]'); "
                             "the stand-in can only imitate outputs for phantoms, whose landmarks it knows")
        volume = volume.astype(np.float32, copy=False)
        true = None
        label = "user volume"

    if use_model:
        if not tensorflow_available():
            raise ImportError("the bundled model needs TensorFlow: pip install 'numvox[tf]'")
        probs, offsets, timings["model_load"], timings["model"], meta = _run_model(volume)
        mode = "model"
        n_lm = int(meta["config"]["n_landmarks"])
    else:
        from .standin import standin_outputs

        t0 = time.perf_counter()
        probs, offsets = standin_outputs(true, volume.shape, seed=seed, radius=DEFAULT_RADIUS, dtype=np.float32)
        # The model's layout: float32 heads with a batch axis of one.  Kernels compile per
        # dtype and number of dimensions, so the same layout reuses the votes and peaks
        # kernels the model path compiled (or loaded from Numba's cache) instead of
        # compiling a float16, batch-less variant.
        probs, offsets = probs[None], offsets[None]
        timings["model"] = time.perf_counter() - t0
        mode = "stand-in"
        n_lm = true.shape[0]

    # First calls include Numba's compilation (or its on-disk cache load); report both.
    t0 = time.perf_counter()
    heat = numvox.aggregate_votes(probs, offsets, threshold=threshold, splat=splat)
    timings["votes_first_call"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    heat = numvox.aggregate_votes(probs, offsets, threshold=threshold, splat=splat)
    timings["votes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    coords, values = numvox.heatmap_peaks(heat, radius=radius)
    timings["peaks_first_call"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    coords, values = numvox.heatmap_peaks(heat, radius=radius)
    timings["peaks"] = time.perf_counter() - t0

    heat = np.asarray(heat)
    coords = np.asarray(coords, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if heat.ndim == 5:  # the model's batch of one
        heat, coords, values = heat[0], coords[0], values[0]
    names = list(LANDMARK_NAMES[:n_lm]) + [f"landmark_{i}" for i in range(len(LANDMARK_NAMES), n_lm)]
    landmarks = []
    errors = []
    for lm in range(n_lm):
        found = coords[lm]
        entry = {
            "name": names[lm],
            "true": None if true is None else [round(float(v), 3) for v in true[lm]],
            "found": [None if not np.isfinite(v) else round(float(v), 3) for v in found],
            "error_voxels": None,
            "peak": round(float(values[lm]), 4),
        }
        if true is not None:
            err = float(np.linalg.norm(found - true[lm]))
            entry["error_voxels"] = round(err, 3) if np.isfinite(err) else None
            errors.append(err)
        landmarks.append(entry)
    result = {
        "landmarks": landmarks,
        "timings_s": {k: round(v, 6) for k, v in timings.items()},
        "mean_error_voxels": (round(float(np.mean(errors)), 3) if errors and np.all(np.isfinite(errors)) else None),
        "mode": mode,
        "input": label,
        "shape": list(volume.shape),
        "png": None,
    }
    if png:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            log("matplotlib is not installed: no PNG written (pip install 'numvox[plot]')")
        else:
            from .plot import save_figure

            os.makedirs(out_dir, exist_ok=True)
            stem = f"numvox-demo-seed{seed}" if true is not None else "numvox-demo-volume"
            path = os.path.join(out_dir, stem + ".png")
            title = f"numvox demo: {label} {volume.shape}, outputs from the {mode}; green o = true, red + = found"
            save_figure(path, volume, heat, true, coords, names, title=title)
            result["png"] = os.path.abspath(path)
    return result


def _to_stderr(*parts):
    print(*parts, file=sys.stderr, flush=True)


def format_report(result):
    """Human-readable lines for a :func:`run_demo` result."""

    def fmt(v):
        return "-" if v is None else "(" + ", ".join("nan" if c is None else f"{c:6.2f}" for c in v) + ")"

    lines = [f"numvox demo: {result['input']} {tuple(result['shape'])}, model outputs from the {result['mode']}"]
    lines.append(f"{'landmark':<15} {'true (x, y, z)':<26} {'found (x, y, z)':<26} error [voxels]")
    for lm in result["landmarks"]:
        err = "-" if lm["error_voxels"] is None else f"{lm['error_voxels']:.2f}"
        lines.append(f"{lm['name']:<15} {fmt(lm['true']):<26} {fmt(lm['found']):<26} {err}")
    if result["mean_error_voxels"] is not None:
        lines.append(f"mean radial error: {result['mean_error_voxels']:.2f} voxels")
    t = result["timings_s"]

    def ms(k):
        return f"{t[k] * 1e3:.1f} ms"

    stage = [f"model {ms('model')}" + (f" (+ load {ms('model_load')})" if "model_load" in t else "")]
    stage.append(f"votes {ms('votes')} (first call {ms('votes_first_call')})")
    stage.append(f"peaks {ms('peaks')} (first call {ms('peaks_first_call')})")
    lines.append("timings: " + ", ".join(stage))
    if result["png"]:
        lines.append(f"figure: {result['png']}")
    return "\n".join(lines)
