"""Run numvox's benchmarks: ``python -m benchmarks [NAME ...] [--quick] [--backend cuda]``.

NAME picks modules ``benchmarks/bench_NAME.py``, ``roofline`` (``benchmarks/roofline.py``:
the machine's limits and every CPU kernel against them) or ``upsampling``
(``benchmarks/upsampling.py``: the Keras PAC layers trained as joint upsamplers against
bilinear / trilinear upsampling); all by default.  Results are printed and
written into ``benchmarks/RESULTS.md``: each module owns one section, replaced in place, so
running one module leaves the other sections as they were.
"""

import argparse
import datetime
import importlib
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
HEADER = """# numvox benchmark results

Written by `python -m benchmarks` (see `benchmarks/_harness.py` for the method: numvox and
each baseline run side by side in one process; numvox's first call, which includes Numba's
compilation or cache load, is reported apart from the median of the following calls, which
run alone with glibc in a warmed-up process's state; "peak extra" is the largest rise of the
process's resident memory during one more call, read from the kernel's peak-RSS mark with
freed heap memory returned to the OS first and malloc's mmap threshold pinned, so that
reused memory cannot hide a peak). Each section names the machine and date it was last run on.
"""


SECTIONS = ("roofline", "upsampling")  # modules without the bench_ prefix that write their whole section


def available():
    names = [p.stem[len("bench_"):] for p in HERE.glob("bench_*.py")]
    return sorted(names + [n for n in SECTIONS if (HERE / f"{n}.py").exists()])


def update_results(name, section_text, path=RESULTS):
    import fcntl

    with open(str(path) + ".lock", "w") as lock:  # several runners may update at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        _update_results_locked(name, section_text, path)


def _update_results_locked(name, section_text, path):
    text = path.read_text() if path.exists() else HEADER
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{section_text.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text if text.endswith("\n") else text + "\n")


def run_module(name, quick, backend):
    from ._harness import machine_description, markdown_table, run_case

    module = importlib.import_module(f"benchmarks.{name}" if name in SECTIONS else f"benchmarks.bench_{name}")
    print(f"== {module.SECTION} ({name})", flush=True)
    if name in SECTIONS:
        return module.section(quick=quick, backend=backend, log=lambda s: print(s, flush=True))
    rows = []
    for case in module.cases(quick=quick, backend=backend):
        rows.extend(run_case(case, log=lambda s: print(s, flush=True)))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"## {module.SECTION}\n\n"
        f"Machine: {machine_description()}. Backend: {backend}. Run: {when}"
        f"{' (quick sizes)' if quick else ''}.\n\n"
        + markdown_table(rows)
    )
    notes = getattr(module, "NOTES", "")
    if notes:
        text += "\n" + notes.strip() + "\n"
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmark modules to run (default: all of {available()})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--output", default=str(RESULTS), help="results file (default: %(default)s)")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    for name in names:
        text = run_module(name, args.quick, args.backend)
        print(text, flush=True)
        if not args.no_write:
            update_results(name, text, pathlib.Path(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
