"""numvox.demo: phantoms, stand-in, the `numvox demo` command, and the bundled model's accuracy."""

import json
import subprocess
import sys

import numpy as np
import pytest

from numvox.cli import main
from numvox.demo import (
    LANDMARK_NAMES,
    TRAIN_SEED_BASE,
    generate_phantom,
    run_demo,
    standin_outputs,
    tensorflow_available,
    training_targets,
)

needs_tf = pytest.mark.skipif(not tensorflow_available(), reason="TensorFlow is not installed")


def _votes_available():
    try:
        import numvox

        numvox.aggregate_votes, numvox.heatmap_peaks  # noqa: B018
        return True
    except (ImportError, AttributeError):
        return False


needs_votes = pytest.mark.skipif(not _votes_available(), reason="numvox.votes is not in this build yet")


# ---- phantoms ------------------------------------------------------------------------------


def test_phantom_is_deterministic_and_seed_dependent():
    v1, l1 = generate_phantom(5)
    v2, l2 = generate_phantom(5)
    v3, l3 = generate_phantom(6)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(l1, l2)
    assert not np.allclose(l1, l3)
    assert v1.dtype == np.float32 and v1.shape == (32, 32, 32) and l1.shape == (len(LANDMARK_NAMES), 3)


def test_phantom_landmarks_inside_and_anatomically_consistent():
    for seed in range(30):
        vol, lms = generate_phantom(seed)
        assert np.all(lms >= 1) and np.all(lms <= 30)
        idx = np.round(lms).astype(int)
        organ, cavity = vol[tuple(idx[0])], vol[tuple(idx[1])]
        assert organ > cavity + 0.4  # bright organ centre, dark cavity centre
        # the apex is on the body's surface: inside along the body, background outside
        d = lms[2] - (lms[0] + lms[1]) / 2
        d /= np.linalg.norm(d)
        inside, outside = np.round(lms[2] - 2 * d).astype(int), np.round(lms[2] + 2.5 * d).astype(int)
        assert vol[tuple(inside)] > vol[tuple(np.clip(outside, 0, 31))] + 0.15


def test_phantom_rejects_bad_arguments():
    with pytest.raises(ValueError):
        generate_phantom(-1)
    with pytest.raises(ValueError):
        generate_phantom(0, (8, 32, 32))
    vol, lms = generate_phantom(1, (48, 40, 36))
    assert vol.shape == (48, 40, 36) and np.all(lms > 0) and np.all(lms < [47, 39, 35])


def test_training_targets_axis_major_offsets_point_at_landmarks():
    vol, lms = generate_phantom(2)
    cls, off, mask = training_targets(lms, vol.shape, radius=3.0)
    L = lms.shape[0]
    assert cls.shape == vol.shape and off.shape == vol.shape + (3 * L,) and mask.shape == vol.shape + (L,)
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.integers(0, 32, 3)
        for lm in range(L):
            target = v + np.array([off[v[0], v[1], v[2], a * L + lm] for a in range(3)])
            np.testing.assert_allclose(target, lms[lm], atol=1e-4)
    for lm in range(L):
        ball = np.argwhere(cls == lm + 1)
        assert len(ball) > 50
        assert np.all(np.linalg.norm(ball - lms[lm], axis=1) <= 3.0 + 1e-9)


def test_standin_outputs_shapes_dtypes_and_probability_simplex():
    _, lms = generate_phantom(3)
    probs, offsets = standin_outputs(lms, (32, 32, 32), seed=3)
    assert probs.shape == (32, 32, 32, 4) and offsets.shape == (32, 32, 32, 9)
    assert probs.dtype == np.float16 and offsets.dtype == np.float16
    p = probs.astype(np.float64)
    assert p.min() >= 0 and np.abs(p.sum(-1) - 1).max() < 5e-3
    for lm in range(3):
        assert (p[..., lm + 1] >= 0.5).sum() > 20  # each landmark gets voters


# ---- the demo ------------------------------------------------------------------------------


@needs_votes
def test_demo_stand_in_cli_json_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["demo", "--stand-in", "--seed", "4", "--json", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout is the JSON object and nothing else
    table = captured.err.splitlines()
    assert set(result["timings_s"]) >= {"model", "votes", "peaks"}
    assert len(result["landmarks"]) == 3
    _, lms = generate_phantom(4)
    for lm, entry in enumerate(result["landmarks"]):
        assert set(entry) >= {"true", "found", "error_voxels"}
        np.testing.assert_allclose(entry["true"], lms[lm], atol=1e-3)
        err = np.linalg.norm(np.array(entry["found"]) - lms[lm])
        assert abs(err - entry["error_voxels"]) < 1e-2 and err < 1.0
    assert result["mode"] == "stand-in"
    png = tmp_path / "numvox-demo-seed4.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("error [voxels]" in line for line in table)
    assert any(line.startswith("timings:") for line in table)


@needs_votes
def test_demo_without_tensorflow_uses_the_stand_in(tmp_path):
    """A process in which TensorFlow cannot be imported (as on a fresh venv without it)."""
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from numvox.cli import main\n"
        "rc = main(['demo', '--json', '--no-png', '--seed', '7'])\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mode"] == "stand-in" and len(result["landmarks"]) == 3
    code = code.replace("'--seed', '7'", "'--volume', 'v.npy'")
    np.save(tmp_path / "v.npy", np.zeros((16, 16, 16), np.float32))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and "TensorFlow" in proc.stderr


def test_demo_cli_user_errors(tmp_path, capsys):
    assert main(["demo", "--seed", "-3"]) == 2
    assert main(["demo", "--volume", str(tmp_path / "missing.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err


@needs_tf
@needs_votes
def test_bundled_model_finds_landmarks_on_fresh_phantoms():
    """Acceptance: 5 phantoms never trained on, every landmark found, mean radial error <= 2."""
    errors = []
    for seed in range(5):
        assert seed < TRAIN_SEED_BASE
        result = run_demo(seed, png=False, use_model=True, log=lambda *a: None)
        assert result["mode"] == "model"
        for entry in result["landmarks"]:
            assert entry["error_voxels"] is not None, (seed, entry)  # found (finite)
            errors.append(entry["error_voxels"])
    errors = np.array(errors)
    print("radial errors [voxels]:", errors.round(2).tolist(), "mean", errors.mean())
    assert errors.mean() <= 2.0


@needs_tf
@needs_votes
def test_demo_on_a_user_volume(tmp_path, capsys):
    vol, lms = generate_phantom(11, (40, 36, 32))  # not a multiple of 8 on every axis: padded
    np.save(tmp_path / "vol.npy", vol)
    assert main(["demo", "--volume", str(tmp_path / "vol.npy"), "--json", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["shape"] == [40, 36, 32] and result["mode"] == "model"
    found = np.array([e["found"] for e in result["landmarks"]], dtype=float)
    assert all(e["true"] is None and e["error_voxels"] is None for e in result["landmarks"])
    assert np.isfinite(found).all() and np.linalg.norm(found - lms, axis=1).mean() < 4.0


@needs_tf
def test_training_script_runs(tmp_path, capsys):
    """The documented re-training command (its main()), for two tiny steps."""
    from numvox.demo.train import main as train_main

    args = ["--steps", "2", "--batch", "1", "--shape", "16", "16", "16", "--eval-every", "2", "--eval-seeds", "1",
            "--out", str(tmp_path)]
    assert train_main(args) == 0
    assert "eval step 2" in capsys.readouterr().out
    assert (tmp_path / "landmark_unet.weights.h5").exists()
    meta = json.loads((tmp_path / "landmark_unet.json").read_text())
    assert meta["config"]["shape"] == [16, 16, 16] and meta["training"]["steps_done"] == 2
    assert meta["training"]["mixed_float16"] is False and meta["training"]["jit_compile"] is False  # CPU defaults


# ---- the command line's output, --size, the figure -----------------------------------------


@needs_votes
def test_demo_json_stdout_is_only_json(tmp_path):
    """`numvox demo --json | python -m json.tool`: stdout parses as one JSON document."""
    code = "import sys; from numvox.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["demo", "--stand-in", "--json", "--seed", "2", "--out", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["mode"] == "stand-in" and result["shape"] == [32, 32, 32]
    assert "error [voxels]" in proc.stderr and "figure:" in proc.stderr  # the table went to stderr
    assert result["png"] and (tmp_path / "numvox-demo-seed2.png").exists()


@needs_votes
def test_demo_size_runs_a_larger_phantom_with_the_same_anatomy(capsys):
    assert main(["demo", "--stand-in", "--size", "48", "--seed", "5", "--json", "--no-png"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["shape"] == [48, 48, 48]
    _, lms32 = generate_phantom(5)
    _, lms48 = generate_phantom(5, (48, 48, 48), scale=1.0)
    # the anatomy keeps its size: the same landmarks, moved with the volume's centre
    np.testing.assert_allclose(lms48 - 23.5, lms32 - 15.5, atol=1e-12)
    for lm, entry in enumerate(result["landmarks"]):
        np.testing.assert_allclose(entry["true"], lms48[lm], atol=1e-3)
        assert entry["error_voxels"] < 1.0
    assert main(["demo", "--size", "8"]) == 2
    assert "--size" in capsys.readouterr().err


def test_phantom_scale_is_checked():
    with pytest.raises(ValueError, match="scale"):
        generate_phantom(0, (32, 32, 32), scale=2.0)
    with pytest.raises(ValueError, match="scale"):
        generate_phantom(0, (32, 32, 32), scale=0.0)
    a, la = generate_phantom(0)
    b, lb = generate_phantom(0, scale=1.0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)


@needs_votes
def test_figure_panels_show_overview_heatmaps_and_errors():
    pytest.importorskip("matplotlib")
    import numvox
    from numvox.demo.plot import HALF_WINDOW, build_figure

    result = run_demo(1, use_model=False, png=False)
    vol, lms = generate_phantom(1)
    probs, offsets = standin_outputs(lms, vol.shape, seed=1, dtype=np.float32)
    heat = np.asarray(numvox.aggregate_votes(probs, offsets))
    found = np.array([e["found"] for e in result["landmarks"]], dtype=float)
    fig = build_figure(vol, heat, lms, found, list(LANDMARK_NAMES))
    L = len(LANDMARK_NAMES)
    images = [ax for ax in fig.axes if ax.get_images() and ax.get_label() != "<colorbar>"]
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(images) == 3 * (L + 1) and len(colorbars) == L + 1
    titles = [ax.get_title() for ax in images]
    assert sum("maximum along" in t for t in titles[:2]) == 2  # the whole volume's MIPs
    mip = images[0]
    assert mip.get_images()[0].get_array().shape == (32, 32)
    assert len([line for line in mip.get_lines() if line.get_marker() == "+"]) == L  # every landmark found
    for lm in range(L):
        row = images[3 * (lm + 1): 3 * (lm + 2)]
        for ax in row[1:]:  # close-ups: heatmap visible, error value in the title
            img = ax.get_images()[0].get_array()
            assert img.shape == (2 * HALF_WINDOW + 1,) * 2 and float(img.max()) > 0
            assert f"error {result['landmarks'][lm]['error_voxels']:.2f}" in ax.get_title()
            assert any(getattr(t, "arrow_patch", None) is not None for t in ax.texts)  # true -> found


def test_tensorflow_start_up_log_lines_are_held_to_the_level():
    from numvox.demo.runner import _ABSL_PREAMBLE, _tensorflow_log_lines

    text = (f"{_ABSL_PREAMBLE}\n"
            "I0000 00:00:1.0  1 port.cc:153] oneDNN custom operations are on.\n"
            "W0000 00:00:1.0  1 thing.cc:1] a warning\n"
            "E0000 00:00:1.0  1 cuda_platform.cc:52] failed call to cuInit: (303)\n"
            "  continued error line\n"
            "/path/x.py:1: UserWarning: from Python\n")
    assert _tensorflow_log_lines(text, 3) == ""
    assert _tensorflow_log_lines(text, 2) == ("E0000 00:00:1.0  1 cuda_platform.cc:52] failed call to cuInit: (303)\n"
                                              "  continued error line\n/path/x.py:1: UserWarning: from Python\n")
    assert _tensorflow_log_lines(text, 0) == text.split("\n", 1)[1]
    assert _tensorflow_log_lines("Traceback (most recent call last):\n", 3) == "Traceback (most recent call last):\n"


def test_training_means_ignore_missing_landmarks_without_warnings():
    import warnings

    from numvox.demo.train import found_mean_errors

    errs = np.array([[1.0, np.nan, 2.0], [3.0, np.nan, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total, per = found_mean_errors(errs)
        nothing, per_nothing = found_mean_errors(np.full((2, 3), np.nan))
    assert total == 2.0
    np.testing.assert_array_equal(per, [2.0, np.nan, 2.0])
    assert np.isnan(nothing) and np.isnan(per_nothing).all()


@needs_tf
@needs_votes
def test_stand_in_reuses_the_kernels_the_model_path_compiled():
    """The stand-in hands numvox the model's layout, so no new kernel signature appears."""
    from numba.core.registry import CPUDispatcher

    def signatures():
        return {(name, attr): len(obj.signatures) for name, mod in list(sys.modules.items())
                if name.startswith("numvox.") for attr, obj in list(vars(mod).items())
                if isinstance(obj, CPUDispatcher)}

    run_demo(0, use_model=True, png=False)
    before = signatures()
    run_demo(0, use_model=False, png=False)
    after = signatures()
    assert {k: v for k, v in after.items() if before.get(k) != v} == {}
