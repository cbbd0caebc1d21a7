"""The ``numvox`` command line (also ``python -m numvox``).

Subcommands live beside their operations: each module in :data:`SUBCOMMAND_MODULES` has a
``register(subparsers)`` function that adds its parser and sets ``func(args)``.  A data
subcommand's ``func`` returns the list of :class:`~numvox._shared.io.Written` outputs; the
command line then prints one summary line on stderr (paths, shapes, dtypes, wall time),
unless ``--quiet``.  Other subcommands return an exit status.  User mistakes (bad files,
bad arguments) print one ``numvox: error: ...`` line and exit 2.  Kernels compiled during a
run are announced on stderr (:mod:`numvox._shared.compile`), except with ``--quiet``.
"""

import argparse
import importlib
import json
import sys
import time

from numvox._shared.io import UserError, check_output, load_array, read_affine, save_array, summary

__all__ = ["UserError", "add_output_arguments", "build_parser", "check_output", "load_array", "main",
           "read_affine", "save_array"]

SUBCOMMAND_MODULES = (
    "numvox.votes.cli",
    "numvox.labels.cli",
    "numvox.correlate.cli",
    "numvox.pac.cli",
    "numvox.demo.cli",
)

FORMATS_HELP = ".npy, .npz, .zarr, .nii or .nii.gz (from the extension)"


def add_output_arguments(parser, what, required=True):
    """Add ``-o/--output`` (``what`` describes the array written) and ``-q/--quiet``."""
    parser.add_argument("-o", "--output", metavar="FILE", required=required,
                        help=f"write {what} to exactly FILE: {FORMATS_HELP}")
    add_quiet_argument(parser)
    return parser


def add_quiet_argument(parser):
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing but errors (no summary line, no compile notice)")
    return parser


def _info(args):
    from numvox import info

    report = info()
    print(json.dumps(dict(report), indent=2) if args.json else report)
    return 0


def _bench(args):
    import os

    if not os.path.isfile(os.path.join("benchmarks", "__main__.py")):
        raise UserError("the benchmarks live in numvox's source checkout: run this from its root")
    sys.path.insert(0, os.getcwd())
    runner = importlib.import_module("benchmarks.__main__")
    return runner.main(args.bench_args)


def _compile(args):
    from numvox import warmup
    from numvox._shared.compile import cache_location, check_cache_writable, run_warmups

    ops = warmup.expand(args.ops)
    dtypes = [d.strip() for d in ",".join(args.dtypes).split(",") if d.strip()]
    if "all" in dtypes:
        dtypes = list(warmup.DTYPES)
    unknown = [d for d in dtypes if d not in warmup.DTYPES]
    if unknown or not dtypes:
        raise UserError(f"--dtypes: unknown {unknown}; choose from {', '.join(warmup.DTYPES)} or all")
    for d in dtypes:
        warmup.numpy_dtype(d)  # bfloat16 without ml_dtypes: say so before starting workers
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be >= 1; got {args.jobs}")
    try:
        check_cache_writable()
    except PermissionError as exc:
        raise UserError(str(exc)) from None
    tasks = [(op, d) for op in sorted(ops, key=warmup.SLOWEST_FIRST.index) for d in dtypes]
    t0 = time.perf_counter()
    done = run_warmups(warmup.warm, tasks, jobs=args.jobs, progress=not args.quiet)
    if not args.quiet:
        slowest = max(done, key=lambda x: x[1])
        print(f"numvox compile: {len(ops)} operation(s) x {len(dtypes)} dtype(s) in "
              f"{time.perf_counter() - t0:.1f} s (slowest {' '.join(slowest[0])} {slowest[1]:.1f} s); "
              f"cache: {cache_location()}", file=sys.stderr)
    return 0


def _add_builtin(sub):
    p = sub.add_parser("info", help="versions, threads, CUDA state, Numba cache and installed extras",
                       description="Print what this installation can do: versions, Numba threads and "
                       "threading layer, CUDA state, the Numba cache folder and the optional extras.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=_info)
    p = sub.add_parser("bench", help="run the benchmarks (from a source checkout)",
                       description="Run python -m benchmarks from numvox's source checkout; arguments "
                       "after 'bench' go to it (e.g. numvox bench votes --quick).")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="arguments for python -m benchmarks (names, --quick, --backend ...)")
    p.set_defaults(func=_bench)
    p = sub.add_parser(
        "compile", help="compile the kernels ahead of time into the Numba cache",
        description="Fill Numba's on-disk cache with numvox's CPU kernels for the given operations and "
        "dtypes, one process per operation and dtype on all cores, so that later first calls load "
        "machine code instead of compiling it (for a Docker image, a cluster's workers, a CI cache). "
        "The cache is NUMBA_CACHE_DIR when set, else __pycache__ beside numvox's sources when they are "
        "writable, else ~/.cache/numba; see numvox info.")
    p.add_argument("ops", nargs="*", metavar="OP",
                   help="operations (aggregate_votes, heatmap_peaks, descent_labels, descent_basins, "
                   "correlate_batch, pac_conv, pac_conv_backward) or families (votes, labels, correlate, "
                   "pac); default: all")
    p.add_argument("--dtypes", nargs="+", default=["float32"], metavar="DTYPE",
                   help="input dtypes: float16, bfloat16, float32, float64 or all (space- or "
                   "comma-separated; default float32)")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="worker processes (default: the usable CPU cores)")
    add_quiet_argument(p)
    p.set_defaults(func=_compile)


def build_parser():
    """The ``numvox`` argument parser with every subcommand this installation has."""
    from numvox import __version__

    parser = argparse.ArgumentParser(
        prog="numvox", description="Fast volumetric image kernels. 'numvox COMMAND --help' shows a "
        f"command's options. Array files: {FORMATS_HELP}.")
    parser.add_argument("--version", action="version", version=f"numvox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_builtin(sub)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that operation is not part of this build
            raise
        module.register(sub)
    return parser


def _run(args):
    """Run the subcommand; print the summary line of a data subcommand."""
    quiet = getattr(args, "quiet", False)
    if getattr(args, "output", None) is not None:
        check_output(args.output)
    from numvox._shared.compile import notice_forced

    t0 = time.perf_counter()
    with notice_forced(not quiet):
        result = args.func(args)
    if isinstance(result, list):
        if not quiet:
            print(summary(args.command, result, time.perf_counter() - t0), file=sys.stderr)
        return 0
    return int(result or 0)


def main(argv=None):
    """Run ``numvox`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from numvox._shared.backend import CudaUnavailableError

    try:
        return _run(args)
    except (UserError, ValueError, TypeError, CudaUnavailableError, ImportError, MemoryError) as exc:
        print(f"numvox: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("numvox: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `numvox info | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
