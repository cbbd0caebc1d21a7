"""The ``numvox`` command line (also ``python -m numvox``).

Subcommands live beside their operations: each module in :data:`SUBCOMMAND_MODULES` has a
``register(subparsers)`` function that adds its parser and sets ``func(args) -> int``.
User mistakes (bad files, bad arguments) print one ``numvox: error: ...`` line and exit 2.
"""

import argparse
import importlib
import json
import sys

SUBCOMMAND_MODULES = (
    "numvox.votes.cli",
    "numvox.labels.cli",
    "numvox.correlate.cli",
    "numvox.pac.cli",
    "numvox.demo.cli",
)


class UserError(Exception):
    """A mistake of the caller: reported as one line, exit status 2."""


def load_array(path, name="input"):
    """Read a ``.npy`` file, or one array of a ``.npz`` file (``FILE.npz`` with one array,
    or ``FILE.npz:KEY``)."""
    import numpy as np

    key = None
    if ".npz:" in path:
        path, key = path.rsplit(":", 1)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{name} file {path!r} does not exist") from None
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read {name} file {path!r} as .npy/.npz: {exc}") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        keys = list(data.keys())
        if key is None:
            if len(keys) != 1:
                raise UserError(f"{path!r} holds arrays {keys}; name one as {path}:KEY")
            key = keys[0]
        if key not in keys:
            raise UserError(f"{path!r} has no array {key!r}; it holds {keys}")
        return data[key]


def save_array(path, array):
    """Write ``array`` to ``path`` (``.npy``; ``.npz`` stores it under the key ``arr``)."""
    import numpy as np

    try:
        if path.endswith(".npz"):
            np.savez_compressed(path, arr=np.asarray(array))
        else:
            np.save(path, np.asarray(array))
    except OSError as exc:
        raise UserError(f"cannot write {path!r}: {exc}") from None


def _info(args):
    from numvox import info
    from numvox._shared.info import format_info

    report = info()
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0


def _bench(args):
    import os

    if not os.path.isfile(os.path.join("benchmarks", "__main__.py")):
        raise UserError("the benchmarks live in numvox's source checkout: run this from its root")
    sys.path.insert(0, os.getcwd())
    runner = importlib.import_module("benchmarks.__main__")
    return runner.main(args.bench_args)


def build_parser():
    parser = argparse.ArgumentParser(prog="numvox", description="Fast volumetric image kernels.")
    from numvox import __version__

    parser.add_argument("--version", action="version", version=f"numvox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, threads, CUDA state and installed extras")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)
    p = sub.add_parser("bench", help="run the benchmarks (from a source checkout)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for python -m benchmarks")
    p.set_defaults(func=_bench)
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that operation is not part of this build
            raise
        module.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from numvox._shared.backend import CudaUnavailableError

    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, TypeError, CudaUnavailableError, ImportError) as exc:
        print(f"numvox: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("numvox: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
