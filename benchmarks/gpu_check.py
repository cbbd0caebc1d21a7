"""The whole GPU check in one run: ``python -m benchmarks.gpu_check [--dry-run] [--budget S]``.

For the day a GPU machine is lent (device time is short: the check fits in one run of at most
8 minutes).  From the repository root it:

1. installs numvox from the working tree without touching the network
   (``pip install --no-deps --no-build-isolation -e .``; the ``gpu`` extra's packages, CuPy and
   the Numba CUDA target, must already be there or be carried as wheels);
2. runs the ``cuda``-marked tests on the real device;
3. runs the votes, labels, correlate and PAC benchmarks with ``backend="cuda"`` at the sizes of
   ``benchmarks/RESULTS.md`` against the CPU path and the baselines of each module (the
   TensorFlow baselines run on the GPU where TensorFlow is installed with GPU support);
4. checks that a TensorFlow GPU tensor makes the round trip through numvox without a copy
   (data pointers of the input, the kernel's view and the result), where TensorFlow is there;
5. writes a ``GPU`` section into ``benchmarks/RESULTS.md`` with the device name and what each
   step gave (a step that was skipped or failed says so; nothing is left out silently).

``--dry-run`` prints the plan, the time budget of each step and the benchmark sizes, and checks
that every module the check needs imports, without a GPU: CI runs it so the check cannot rot.
"""

import argparse
import datetime
import importlib
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHMARKS = ("votes", "labels", "correlate", "pac")
#: step -> seconds it may take (the sum stays under the 8-minute device budget)
BUDGET = {"install": 45, "tests": 150, "votes": 45, "labels": 45, "correlate": 60, "pac": 60, "tf-zero-copy": 30}


def plan():
    """The steps as (name, command or description, budget in seconds)."""
    py = sys.executable
    steps = [
        ("install", f"{py} -m pip install -q --no-deps --no-build-isolation -e .", BUDGET["install"]),
        ("tests", f"{py} -m pytest -q -m cuda -p no:cacheprovider", BUDGET["tests"]),
    ]
    for name in BENCHMARKS:
        steps.append((name, f"{py} -m benchmarks {name} --backend cuda --no-write", BUDGET[name]))
    steps.append(("tf-zero-copy", "TF GPU tensor -> numvox.tf.descent_labels -> TF: compare data pointers",
                  BUDGET["tf-zero-copy"]))
    return steps


def benchmark_sizes():
    """Each benchmark module's sizes, as its docstring or SIZES constant states them."""
    sizes = {}
    for name in BENCHMARKS:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        if not callable(getattr(module, "cases", None)):
            raise RuntimeError(f"benchmarks.bench_{name} has no cases(quick, backend)")
        sizes[name] = getattr(module, "SIZES", None) or (module.__doc__ or "").strip().splitlines()[0]
    return sizes


def run_step(name, command, budget, log):
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=budget)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
    except subprocess.TimeoutExpired as exc:
        status = f"stopped after its {budget} s budget"
        tail = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes)
                else (exc.stdout or "")).strip().splitlines()[-25:]
    seconds = time.perf_counter() - start
    log(f"[{name}] {status} in {seconds:.0f} s")
    return status, seconds, tail


def tf_zero_copy():
    """``(status, detail)`` of the TF GPU round trip."""
    try:
        import tensorflow as tf
    except ImportError:
        return "skipped", "TensorFlow is not installed on this machine"
    if not tf.config.list_logical_devices("GPU"):
        return "skipped", "TensorFlow sees no GPU (a CPU-only TensorFlow build)"
    import cupy
    import numpy as np

    import numvox.tf as ntf

    with tf.device("/GPU:0"):
        v = tf.constant(np.random.default_rng(0).random((64, 64, 64), np.float32))
        labels = ntf.descent_labels(v)
    src = cupy.from_dlpack(tf.experimental.dlpack.to_dlpack(v)).data.ptr
    out = cupy.from_dlpack(tf.experimental.dlpack.to_dlpack(labels)).data.ptr
    on_gpu = "GPU" in labels.device.upper()
    return ("ok" if on_gpu else "failed"), f"input at {src:#x}, result at {out:#x} on {labels.device}"


def device_name():
    try:
        from numba import cuda

        name = cuda.get_current_device().name
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:  # no GPU (dry run) or a broken driver: say which
        return f"no CUDA device ({type(exc).__name__})"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and sizes; run nothing on a GPU")
    parser.add_argument("--no-write", action="store_true", help="print the GPU section; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    steps = plan()
    total = sum(b for _, _, b in steps)
    print(f"GPU check: {len(steps)} steps, {total} s budget in all (device limit 480 s)")
    for name, command, budget in steps:
        print(f"  {name:13s} {budget:4d} s  {command}")
    for name, sizes in benchmark_sizes().items():
        print(f"  sizes of {name}: {sizes}")
    if total > 480:
        print("the steps' budgets exceed the 8-minute device run", file=sys.stderr)
        return 1
    if args.dry_run:
        return 0
    rows, log = [], lambda s: print(s, flush=True)
    env_note = f"Python {sys.version.split()[0]}, device: {device_name()}"
    for name, command, budget in steps:
        if name == "tf-zero-copy":
            status, detail = tf_zero_copy()
            rows.append((name, status, "", detail))
            continue
        status, seconds, tail = run_step(name, command, budget, log)
        print("\n".join(tail))
        detail = next((ln for ln in reversed(tail) if "passed" in ln or "failed" in ln), "") if name == "tests" else ""
        rows.append((name, status, f"{seconds:.0f} s", detail or "see the benchmark output of this run"))
        if name in BENCHMARKS:
            rows[-1] = (name, status, f"{seconds:.0f} s", " / ".join(ln for ln in tail if ln.startswith("|"))[:2000])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"## GPU\n\nMachine: {env_note}. Run: {when}, `python -m benchmarks.gpu_check`.\n\n"
    text += "| step | status | time | result |\n|---|---|---|---|\n"
    text += "".join(f"| {n} | {s} | {t} | {d} |\n" for n, s, t, d in rows)
    print(text)
    if not args.no_write:
        from benchmarks.__main__ import update_results

        update_results("gpu", text)
    return 0 if all(r[1] in ("ok", "skipped") for r in rows) else 1


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
