"""``numvox demo``: the landmark pipeline end to end (see :mod:`numvox.demo.runner`)."""

import json
import sys

DESCRIPTION = """\
Generate a synthetic phantom (or read --volume), predict landmark class probabilities and
offsets with the bundled 3-D U-Net (TensorFlow) -- or, without TensorFlow, with a synthetic
stand-in for its outputs -- aggregate the votes with numvox.aggregate_votes, locate each
landmark with numvox.heatmap_peaks, and print true/found positions, errors and stage
timings.  With matplotlib, writes a PNG: the volume's maximum-intensity projections with
every landmark, then per landmark its slice and close-ups of its heatmap with the error.
--size N times every stage on a larger phantom."""


def register(subparsers):
    p = subparsers.add_parser("demo", help="landmark detection end to end: model -> votes -> peaks",
                              description=DESCRIPTION)
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0; training never used seeds below 1e6)")
    p.add_argument("--volume", metavar="FILE.npy",
                   help="run on this 3-D volume instead of a phantom (needs TensorFlow)")
    p.add_argument("--out", metavar="DIR", default=".", help="directory for the PNG (default: current directory)")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="phantom of N x N x N voxels (default 32, at least 16); the anatomy keeps the size the "
                        "model was trained at, so e.g. --size 128 times every stage on a 128^3 field of view")
    p.add_argument("--json", action="store_true",
                   help="write the result as one JSON object on stdout, and the table on stderr "
                        "(so `numvox demo --json | python -m json.tool` works)")
    p.add_argument("--no-png", action="store_true", help="do not write the PNG")
    p.add_argument("--stand-in", action="store_true", help="use the synthetic stand-in even if TensorFlow is installed")
    p.add_argument("--threshold", type=float, default=0.5, help="vote threshold (default 0.5)")
    p.add_argument("--splat", choices=("nearest", "linear"), default="linear", help="vote splatting (default linear)")
    p.set_defaults(func=_run)


def _run(args):
    from numvox.cli import UserError, load_array

    from .phantom import DEFAULT_SHAPE
    from .runner import format_report, quiet_tensorflow_logs, run_demo, tensorflow_available

    if args.seed < 0:
        raise UserError(f"--seed must be >= 0; got {args.seed}")
    if args.size is not None and args.size < 16:
        raise UserError(f"--size must be >= 16; got {args.size}")
    if args.volume and args.size is not None:
        raise UserError("--size sets the phantom's size; it cannot be used with --volume")
    volume = load_array(args.volume, "volume") if args.volume else None
    use_model = False if args.stand_in else None
    if volume is not None and not tensorflow_available():
        raise UserError("--volume needs TensorFlow to run the bundled model (pip install 'numvox[tf]')")
    if use_model is not False and tensorflow_available():
        quiet_tensorflow_logs()
    result = run_demo(args.seed, volume, use_model=use_model, threshold=args.threshold, splat=args.splat,
                      out_dir=args.out, png=not args.no_png, shape=(args.size or DEFAULT_SHAPE[0],) * 3)
    print(format_report(result), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json:
        print(json.dumps(result), flush=True)
    return 0
