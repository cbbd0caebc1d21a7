"""``numvox correlate IMAGES FILTERS -o OUT``: batched cross-correlation."""

import os
import sys

from numvox._shared.backend import BACKENDS

from ._rules import METHODS, MODES, REDUCES


def register(subparsers):
    from numvox.cli import FORMATS_HELP, add_output_arguments

    p = subparsers.add_parser(
        "correlate",
        help="cross-correlate a batch of images with a bank of filters",
        description="Cross-correlate every image of IMAGES (N, *item) with every filter of FILTERS "
        "(K, *item), as numvox.correlate_batch does, and save the result.",
    )
    p.add_argument("images", help=f"images, shape (N, *item): {FORMATS_HELP}")
    p.add_argument("filters", help="filters, shape (K, *item), same number of dimensions as IMAGES")
    add_output_arguments(p, "the result: (N, K, *out) maps, or (N, K) maxima with --reduce")
    p.add_argument("--mode", default="same", choices=MODES, help="output size (default: same)")
    p.add_argument("--reduce", default=None, choices=REDUCES,
                   help="keep only each map's maximum (argmax: also its position, see --positions)")
    p.add_argument("--positions", metavar="FILE", default=None,
                   help="with --reduce argmax: where the (N, K, ndim) positions go "
                        "(default: OUT's name with _positions before its extension)")
    p.add_argument("--normalize", action="store_true", help="zero-normalised cross-correlation")
    p.add_argument("--channel-axis", type=int, default=None,
                   help="axis of the inputs holding channels (summed, not correlated), e.g. -1")
    p.add_argument("--method", default="auto", choices=METHODS,
                   help="direct sums or FFT products (default auto: the cheaper by a cost model)")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="where the kernels run (default cpu for files; cuda needs a GPU)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    p.set_defaults(func=_run)


def positions_path(path):
    """``OUT`` with ``_positions`` before its extension (``o.nii.gz`` -> ``o_positions.nii.gz``)."""
    from numvox._shared.io import file_format

    fmt = file_format(path) or ".npy"
    if path.lower().endswith(fmt):
        return path[: -len(fmt)] + "_positions" + path[-len(fmt):]
    return os.path.splitext(path)[0] + "_positions" + fmt


def _run(args):
    from numvox.cli import UserError, check_output, load_array, save_array

    from ._api import correlate_batch

    positions = None
    if args.reduce == "argmax":
        positions = check_output(args.positions or positions_path(args.output), "--positions")
    elif args.positions:
        raise UserError("--positions needs --reduce argmax")
    images = load_array(args.images, "images")
    filters = load_array(args.filters, "filters")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = correlate_batch(images, filters, mode=args.mode, channel_axis=args.channel_axis, reduce=args.reduce,
                             normalize=args.normalize, method=args.method, progress=progress, backend=args.backend)
    if args.reduce == "argmax":
        values, where = result
        return [save_array(args.output, values, spatial_axes=()), save_array(positions, where, spatial_axes=())]
    return [save_array(args.output, result, spatial_axes=tuple(range(2, result.ndim)))]  # (N, K, *out)
