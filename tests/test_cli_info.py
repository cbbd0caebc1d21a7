"""``numvox info``, the CLI skeleton, the import-time promise and the benchmark runner."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import numvox
from numvox import cli


def test_info_reports_what_the_issue_lists():
    report = numvox.info()
    for key in ("numvox", "numpy", "numba", "threads", "threading_layer", "cuda", "cuda_device", "extras"):
        assert key in report
    assert report["cuda"] in ("available", "simulated", "unavailable")
    import configparser
    import pathlib

    cfg = configparser.ConfigParser()
    cfg.read(pathlib.Path(__file__).resolve().parents[1] / "setup.cfg")
    declared = set(cfg["options.extras_require"]) - {"test"}  # every extra a user installs
    assert set(report["extras"]) == declared
    assert report["threads"] >= 1


def test_cli_info_text_and_json(capsys):
    assert cli.main(["info"]) == 0
    assert "threading_layer" in capsys.readouterr().out
    assert cli.main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["numvox"] == numvox.__version__


def test_cli_without_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "info" in capsys.readouterr().out


def test_python_dash_m_and_import_stay_light():
    code = (
        "import sys, time; t = time.perf_counter(); import numvox; dt = time.perf_counter() - t;"
        "heavy = [m for m in ('tensorflow', 'cupy', 'dask', 'matplotlib', 'numba.cuda') if m in sys.modules];"
        "print(dt, heavy)"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    seconds, heavy = out.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(seconds) < 1.0
    res = subprocess.run([sys.executable, "-m", "numvox", "info"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "numba" in res.stdout


def test_load_array_errors_are_user_errors(tmp_path):
    with pytest.raises(cli.UserError, match="does not exist"):
        cli.load_array(str(tmp_path / "missing.npy"))
    bad = tmp_path / "bad.npy"
    bad.write_text("not an array")
    with pytest.raises(cli.UserError, match="cannot read"):
        cli.load_array(str(bad))
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.ones(3))
    with pytest.raises(cli.UserError, match="name one"):
        cli.load_array(str(tmp_path / "two.npz"))
    np.testing.assert_array_equal(cli.load_array(str(tmp_path / "two.npz") + ":b"), np.ones(3))
    cli.save_array(str(tmp_path / "x.npy"), np.arange(3))
    np.testing.assert_array_equal(cli.load_array(str(tmp_path / "x.npy")), np.arange(3))


def test_benchmark_runner_writes_its_section(tmp_path, repo_benchmarks):
    from benchmarks.__main__ import main, update_results

    results = tmp_path / "RESULTS.md"
    update_results("other", "## Other\nkept", results)
    assert main(["selfcheck", "--quick", "--output", str(results)]) == 0
    text = results.read_text()
    assert "## Other\nkept" in text and "## Harness self-check" in text and "numpy.sum" in text
    assert main(["selfcheck", "--quick", "--output", str(results)]) == 0
    assert results.read_text().count("<!-- bench:selfcheck -->") == 1


def test_roofline_section_quick(tmp_path, repo_benchmarks, monkeypatch):
    """The roofline section is written by the runner (quick sizes; no timing asserted)."""
    import benchmarks.roofline as roofline
    from benchmarks.__main__ import main

    monkeypatch.setattr(roofline, "_pac_rows", lambda quick: iter(()))  # PAC compiles for minutes cold
    results = tmp_path / "RESULTS.md"
    assert main(["roofline", "--quick", "--output", str(results)]) == 0
    text = results.read_text()
    assert "<!-- bench:roofline -->" in text and "## Roofline" in text
    for kernel in ("stream copy", "FMA peak", "aggregate_votes", "descent_labels", "correlate_batch direct",
                   "correlate_batch FFT"):
        assert kernel in text
