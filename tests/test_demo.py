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
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])  # one JSON object, last on stdout
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
    assert any("error [voxels]" in line for line in out)
    assert any(line.startswith("timings:") for line in out)


@needs_votes
def test_demo_without_tensorflow_uses_the_stand_in(tmp_path):
    """A process in which TensorFlow cannot be imported (as on a fresh venv without it)."""
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from numvox.cli import main\n"
        f"rc = main(['demo', '--json', '--no-png', '--seed', '7'])\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
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
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["shape"] == [40, 36, 32] and result["mode"] == "model"
    found = np.array([e["found"] for e in result["landmarks"]], dtype=float)
    assert all(e["true"] is None and e["error_voxels"] is None for e in result["landmarks"])
    assert np.isfinite(found).all() and np.linalg.norm(found - lms, axis=1).mean() < 4.0


@needs_tf
def test_training_script_runs(tmp_path, capsys):
    """The documented re-training command (its main()), for two tiny steps."""
    from numvox.demo.train import main as train_main

    args = ["--steps", "2", "--batch", "1", "--shape", "16", "16", "16", "--eval-every", "2", "--eval-seeds", "1", "--out", str(tmp_path)]
    assert train_main(args) == 0
    assert "eval step 2" in capsys.readouterr().out
    assert (tmp_path / "landmark_unet.weights.h5").exists()
    meta = json.loads((tmp_path / "landmark_unet.json").read_text())
    assert meta["config"]["shape"] == [16, 16, 16] and meta["training"]["steps_done"] == 2
    assert meta["training"]["mixed_float16"] is False and meta["training"]["jit_compile"] is False  # CPU defaults
