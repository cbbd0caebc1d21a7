"""The prepared GPU check (benchmarks/gpu_check.py) stays runnable: its dry run plans every step
within the 8-minute device budget and imports every module it needs, without a GPU."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_plans_every_step_within_budget():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for step in ("install", "tests", "votes", "labels", "correlate", "pac", "tf-zero-copy"):
        assert f"  {step} " in out
    total = int(out.split(" s budget")[0].rsplit(",", 1)[1])
    assert total <= 480
