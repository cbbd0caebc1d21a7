"""``numvox correlate IMAGES.npy FILTERS.npy -o OUT.npy``: batched cross-correlation."""

import sys

from numvox._shared.backend import BACKENDS

from ._rules import METHODS, MODES, REDUCES


def register(subparsers):
    p = subparsers.add_parser(
        "correlate",
        help="cross-correlate a batch of images with a bank of filters",
        description="Cross-correlate every image of IMAGES (N, *item) with every filter of FILTERS "
        "(K, *item), as numvox.correlate_batch does, and save the result.",
    )
    p.add_argument("images", help="images .npy/.npz file, shape (N, *item)")
    p.add_argument("filters", help="filters .npy/.npz file, shape (K, *item)")
    p.add_argument("-o", "--output", required=True, help="output .npy (or .npz) file")
    p.add_argument("--mode", default="same", choices=MODES, help="output size (default: same)")
    p.add_argument("--reduce", default=None, choices=REDUCES,
                   help="keep only each map's maximum (argmax: also its position, saved as OUT_positions.npy)")
    p.add_argument("--normalize", action="store_true", help="zero-normalised cross-correlation")
    p.add_argument("--channel-axis", type=int, default=None,
                   help="axis of the inputs holding channels (summed, not correlated), e.g. -1")
    p.add_argument("--method", default="auto", choices=METHODS)
    p.add_argument("--backend", default=None, choices=BACKENDS)
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_run)


def _positions_path(path):
    for ext in (".npy", ".npz"):
        if path.endswith(ext):
            return path[: -len(ext)] + "_positions" + ext
    return path + "_positions.npy"


def _run(args):
    from numvox.cli import load_array, save_array

    from ._api import correlate_batch

    images = load_array(args.images, "images")
    filters = load_array(args.filters, "filters")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = correlate_batch(images, filters, mode=args.mode, channel_axis=args.channel_axis, reduce=args.reduce,
                             normalize=args.normalize, method=args.method, progress=progress, backend=args.backend)
    if args.reduce == "argmax":
        values, positions = result
        save_array(args.output, values)
        save_array(_positions_path(args.output), positions)
    else:
        save_array(args.output, result)
    return 0
