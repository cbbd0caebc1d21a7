"""The command line as a user meets it: real files, one ``numvox`` process per command.

Every data subcommand writes exactly the ``-o`` path in the format of its extension, prints one
summary line on stderr (``--quiet``: nothing), and answers a missing file, a ``.txt`` file, a
wrong shape or an unknown output format with one ``numvox: error:`` line and exit status 2,
writing nothing.  Values are compared with the float64 references in ``tests/reference.py``.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from reference import ref_basins, ref_correlate, ref_labels, ref_pac, ref_peaks, ref_votes

SUMMARY = "numvox {}: wrote "


def numvox(*args, env=None, cwd=None):
    """Run ``python -m numvox ARGS``; return (returncode, stdout, stderr)."""
    full = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    full.update(env or {})
    res = subprocess.run([sys.executable, "-m", "numvox", *map(str, args)], capture_output=True, text=True,
                         env=full, cwd=cwd)
    return res.returncode, res.stdout, res.stderr


def summary_lines(err, command):
    return [line for line in err.splitlines() if line.startswith(SUMMARY.format(command))]


def assert_one_error(rc, err, *needles):
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("numvox: error: "), err
    for needle in needles:
        assert needle in lines[0], err


# -- inputs per subcommand: (argv before -o, expected outputs) ------------------------------
def _votes_case(tmp_path):
    rng = np.random.default_rng(1)
    probs = rng.random((6, 5, 4, 3)).astype(np.float32)
    offsets = (rng.random((6, 5, 4, 6)) * 2 - 1).astype(np.float32)
    np.save(tmp_path / "p.npy", probs)
    np.save(tmp_path / "o.npy", offsets)
    heat, _ = ref_votes(probs, offsets, 0.5, "nearest")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, offsets[..., :4])
    return ["votes", tmp_path / "p.npy", tmp_path / "o.npy"], heat, ["votes", tmp_path / "p.npy", wrong]


def _labels_case(tmp_path):
    v = np.random.default_rng(2).integers(0, 5, (6, 5, 4)).astype(np.float32)
    np.save(tmp_path / "v.npy", v)
    np.save(tmp_path / "flat.npy", v[0])
    return ["labels", tmp_path / "v.npy"], ref_labels(v), ["labels", tmp_path / "flat.npy"]


def _correlate_case(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.random((2, 7, 6), dtype=np.float32)
    filters = rng.random((3, 3, 3), dtype=np.float32)
    np.save(tmp_path / "i.npy", images)
    np.save(tmp_path / "f.npy", filters)
    np.save(tmp_path / "f4.npy", filters[None])
    return (["correlate", tmp_path / "i.npy", tmp_path / "f.npy"], ref_correlate(images, filters, "same"),
            ["correlate", tmp_path / "i.npy", tmp_path / "f4.npy"])


def _pac_case(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 5, 6, 2)).astype(np.float32)
    g = rng.standard_normal((1, 5, 6, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    for name, a in (("x", x), ("g", g), ("w", w)):
        np.save(tmp_path / f"{name}.npy", a)
    np.save(tmp_path / "g_small.npy", g[:, :4])
    return (["pac", tmp_path / "x.npy", tmp_path / "g.npy", tmp_path / "w.npy"],
            ref_pac(x, g, w, None, 1, "same", 1, False),
            ["pac", tmp_path / "x.npy", tmp_path / "g_small.npy", tmp_path / "w.npy"])


CASES = {"votes": _votes_case, "labels": _labels_case, "correlate": _correlate_case, "pac": _pac_case}


@pytest.mark.parametrize("command", sorted(CASES))
def test_subcommand_writes_exactly_the_output_path(command, tmp_path):
    argv, want, _ = CASES[command](tmp_path)
    out = tmp_path / "result.v1.npz"  # a dot in the stem: nothing appended, nothing cut
    rc, stdout, err = numvox(*argv, "-o", out)
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("result")) == ["result.v1.npz"]
    with np.load(out) as z:
        got = z["arr"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    lines = summary_lines(err, command)
    assert len(lines) == 1, err
    shape = "x".join(map(str, got.shape))
    assert f"{out} ({shape} {got.dtype})" in lines[0] and lines[0].endswith(" s")
    assert stdout == ""
    rc, stdout, err = numvox(*argv, "-o", tmp_path / "quiet.npy", "--quiet")
    assert rc == 0 and stdout == "" and err == "", err
    np.testing.assert_allclose(np.load(tmp_path / "quiet.npy"), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("command", sorted(CASES))
def test_subcommand_user_errors_are_one_line(command, tmp_path):
    argv, _, wrong_shape = CASES[command](tmp_path)
    out = tmp_path / "out.npy"
    first_input = argv[1]
    assert_one_error(*numvox(*argv, "-o", tmp_path / "out.txt")[::2], "unknown output format", ".nii.gz")
    missing = [a if a != first_input else tmp_path / "missing.npy" for a in argv]
    assert_one_error(*numvox(*missing, "-o", out)[::2], "missing.npy", "does not exist")
    text = tmp_path / "input.txt"
    text.write_text("1 2 3\n")
    as_text = [a if a != first_input else text for a in argv]
    rc, _, err = numvox(*as_text, "-o", out)
    assert_one_error(rc, err, "input.txt", "cannot read .txt files")
    assert "pickle" not in err
    disguised = tmp_path / "text.npy"
    disguised.write_text("1 2 3\n")
    rc, _, err = numvox(*[a if a != first_input else disguised for a in argv], "-o", out)
    assert_one_error(rc, err, "text.npy", "not a NumPy .npy file")
    assert "pickle" not in err
    rc, _, err = numvox(*wrong_shape, "-o", out)
    assert_one_error(rc, err)
    assert not out.exists()


def test_votes_peaks_and_labels_basins_in_one_summary(tmp_path):
    argv, heat, _ = _votes_case(tmp_path)
    rc, _, err = numvox(*argv, "-o", tmp_path / "h.npy", "--peaks", tmp_path / "peaks.csv")
    assert rc == 0, err
    rows = (tmp_path / "peaks.csv").read_text().splitlines()
    coords, _ = ref_peaks(heat, 1)
    assert len(rows) == 1 + len(coords)
    np.testing.assert_allclose([float(v) for v in rows[1].split(",")[2:5]], coords[0], atol=1e-4)
    (line,) = summary_lines(err, "votes")
    assert "peaks.csv (2 peaks, CSV)" in line
    v = np.random.default_rng(5).integers(0, 4, (5, 6, 7)).astype(np.int16)
    np.save(tmp_path / "v.npy", v)
    rc, _, err = numvox("labels", tmp_path / "v.npy", "-o", tmp_path / "l.npy", "--basins", tmp_path / "b.npy")
    assert rc == 0, err
    basins = ref_basins(v)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), basins)
    (line,) = summary_lines(err, "labels")
    assert f"b.npy (5x6x7 int32), {basins.max()} basins" in line
    assert_one_error(*numvox("labels", tmp_path / "v.npy", "-o", tmp_path / "l.npy", "--basins",
                             tmp_path / "b.txt")[::2], "--basins")


def test_correlate_argmax_positions_path(tmp_path):
    argv, _, _ = _correlate_case(tmp_path)
    rc, _, err = numvox(*argv, "-o", tmp_path / "m.npz", "--reduce", "argmax", "--no-progress")
    assert rc == 0, err
    assert (tmp_path / "m.npz").exists() and (tmp_path / "m_positions.npz").exists()
    rc, _, err = numvox(*argv, "-o", tmp_path / "m.npy", "--reduce", "argmax", "--positions", tmp_path / "where.npy")
    assert rc == 0, err
    assert np.load(tmp_path / "where.npy").shape == (2, 3, 2)
    (line,) = summary_lines(err, "correlate")
    assert "m.npy (2x3 float32)" in line and "where.npy (2x3x2 int64)" in line


def test_pac_takes_dash_o(tmp_path):
    argv, want, _ = _pac_case(tmp_path)
    rc, _, err = numvox(*argv, "--output", tmp_path / "y.npy", "--padding", "same")
    assert rc == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-4, atol=1e-4)
    assert_one_error(*numvox(*argv)[::2], "-o/--output")


def test_nifti_round_trip_keeps_the_affine(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(6)
    v = rng.integers(0, 6, (7, 6, 5)).astype(np.int16)
    affine = np.diag([2.0, 1.5, 3.0, 1.0])
    affine[:3, 3] = (-10, 4, 7)
    big_endian = nib.Nifti1Image(v.astype(">i2"), affine)
    nib.save(big_endian, tmp_path / "v.nii.gz")
    rc, _, err = numvox("labels", tmp_path / "v.nii.gz", "-o", tmp_path / "l.nii", "--basins", tmp_path / "b.nii.gz")
    assert rc == 0, err
    labels = nib.load(tmp_path / "l.nii")
    np.testing.assert_array_equal(np.asarray(labels.dataobj), ref_labels(v))
    np.testing.assert_array_equal(labels.affine, affine)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "b.nii.gz").dataobj), ref_basins(v))
    # a NIfTI output read back in as an input: the same labels as from the .npy file
    rc, _, err = numvox("labels", tmp_path / "l.nii", "-o", tmp_path / "ll.npy")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "ll.npy"), ref_labels(ref_labels(v)))


def test_nifti_bundled_anatomical_and_channel_axes_last(tmp_path):
    nib = pytest.importorskip("nibabel")
    anat = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")
    if not os.path.exists(anat):
        pytest.skip("this nibabel has no bundled anatomical.nii")
    volume = np.asarray(nib.load(anat).dataobj)
    rc, _, err = numvox("labels", anat, "-o", tmp_path / "l.nii.gz")
    assert rc == 0, err
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "l.nii.gz").dataobj), ref_labels(volume))
    # heatmaps (L, X, Y, Z) are written with the spatial axes first, as NIfTI viewers expect
    argv, heat, _ = _votes_case(tmp_path)
    rc, _, err = numvox(*argv, "-o", tmp_path / "h.nii")
    assert rc == 0, err
    np.testing.assert_allclose(np.asarray(nib.load(tmp_path / "h.nii").dataobj), np.moveaxis(heat, 0, -1),
                               rtol=1e-4, atol=1e-4)


def test_zarr_in_and_out(tmp_path):
    zarr = pytest.importorskip("zarr")
    v = np.random.default_rng(7).random((6, 5, 4)).astype(np.float32)
    zarr.save_array(str(tmp_path / "v.zarr"), v)
    rc, _, err = numvox("labels", tmp_path / "v.zarr", "-o", tmp_path / "l.zarr")
    assert rc == 0, err
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "l.zarr"), mode="r")[...], ref_labels(v))


def test_every_option_has_help():
    from numvox.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert {"info", "bench", "compile", "votes", "labels", "correlate", "pac", "demo"} <= set(helps)
    assert all(helps.values()), helps
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.help is not None and action.help.startswith("==SUPPRESS=="):
                continue
            assert action.help, f"numvox {name} {action.option_strings or action.dest} has no help"
    rc, out, _ = numvox("--help")
    assert rc == 0 and all(f"    {c}" in out for c in ("pac", "compile", "info", "bench"))


def test_info_prints_its_table():
    import numvox as nv

    report = nv.info()
    assert isinstance(report, dict) and "numba_cache" in report
    assert repr(report) == str(report) and "threading_layer" in repr(report)
    session = "import numvox\nnumvox.info()\n"  # what the README shows, at an interactive prompt
    res = subprocess.run([sys.executable, "-i", "-q"], input=session, capture_output=True, text=True)
    assert "numba_cache" in res.stdout and "threading_layer" in res.stdout, res.stdout + res.stderr
    rc, out, _ = numvox("info")
    assert rc == 0 and out.startswith("numvox ") and "numba_cache" in out


def test_compile_fills_a_fresh_cache_dir(tmp_path):
    cache = tmp_path / "numba-cache"  # a read-only installation points NUMBA_CACHE_DIR somewhere writable
    env = {"NUMBA_CACHE_DIR": str(cache)}
    rc, out, err = numvox("compile", "heatmap_peaks", "--dtypes", "float32", "-j", "1", env=env)
    assert rc == 0, err
    assert any(p.suffix == ".nbc" for p in cache.rglob("*")), list(cache.rglob("*"))
    assert "numvox compile [" in err and "1/1" in err
    assert f"cache: {cache}" in err.splitlines()[-1]
    # a later process loads the kernels instead of compiling: no compile notice
    code = ("import numpy as np, numvox; "
            "numvox.heatmap_peaks(np.random.default_rng(0).random((2, 6, 5, 4)).astype(np.float32))")
    notice = {**env, "NUMVOX_COMPILE_NOTICE": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **notice})
    assert res.returncode == 0 and "compiling" not in res.stderr, res.stderr


def test_compile_notice_on_a_cold_cache_and_its_errors(tmp_path):
    code = ("import numpy as np; from numvox._shared.compile import install_notice; install_notice(); "
            "import numvox; numvox.heatmap_peaks(np.zeros((1, 3, 3, 3), np.float64))")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "c"), "NUMVOX_COMPILE_NOTICE": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    lines = [line for line in res.stderr.splitlines() if "compiling" in line]
    assert res.returncode == 0 and len(lines) == 1 and lines[0].startswith("numvox: compiling votes kernels")
    env["NUMVOX_COMPILE_NOTICE"] = "0"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stderr == ""
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_error(*numvox("compile", "votes", env={"NUMBA_CACHE_DIR": str(blocker / "x")})[::2],
                     "NUMBA_CACHE_DIR")
    assert_one_error(*numvox("compile", "nonsense")[::2], "unknown operation", "pac_conv")
    assert_one_error(*numvox("compile", "votes", "--dtypes", "int8")[::2], "--dtypes")
