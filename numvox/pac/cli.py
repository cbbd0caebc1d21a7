"""``numvox pac X GUIDE WEIGHT -o OUT``: pixel-adaptive convolution of array files."""

import argparse


def _ints(text, name):
    from numvox.cli import UserError

    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--{name} must be an int or comma-separated ints (one per axis); got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _run(args):
    from numvox.cli import UserError, check_output, load_array, read_affine, save_array

    from ._api import pac_conv

    if args.output is not None and args.legacy_out is not None:
        raise UserError("give the output once, as -o/--output")
    output = args.output or args.legacy_out
    if output is None:
        raise UserError("the following arguments are required: -o/--output")
    check_output(output)
    x = load_array(args.x, "x")
    guide = load_array(args.guide, "guide")
    weight = load_array(args.weight, "weight")
    bias = load_array(args.bias, "bias") if args.bias else None
    padding = args.padding if args.padding.lower() in ("same", "valid") else _ints(args.padding, "padding")
    out = pac_conv(x, guide, weight, bias, stride=_ints(args.stride, "stride"), padding=padding,
                   dilation=_ints(args.dilation, "dilation"), normalize=args.normalize, backend=args.backend)
    spatial = tuple(range(1, out.ndim - 1))  # (N, *spatial, O)
    return [save_array(output, out, affine=read_affine(args.x), spatial_axes=spatial)]


def register(subparsers):
    from numvox.cli import FORMATS_HELP, add_output_arguments

    p = subparsers.add_parser(
        "pac",
        help="pixel-adaptive convolution (channels-last x, guide; TF-layout weight)",
        description="out = pac_conv(x, guide, weight, bias): x (N,[D,]H,W,C), guide (N,[D,]H,W,F), "
        "weight ([kd,]kh,kw,C,O); 2-D or 3-D from the weight's rank.",
    )
    p.add_argument("x", help=f"input, (N,[D,]H,W,C): {FORMATS_HELP} (.npz: FILE.npz:KEY)")
    p.add_argument("guide", help="guide features, (N,[D,]H,W,F), same spatial shape as X")
    p.add_argument("weight", help="filter, ([kd,]kh,kw,C,O)")
    p.add_argument("legacy_out", nargs="?", default=None, help=argparse.SUPPRESS)  # older spelling of -o
    add_output_arguments(p, "the result, (N,[D',]H',W',O)", required=False)
    p.add_argument("--bias", help="bias of shape (O,), any array file")
    p.add_argument("--stride", default="1", help="int or comma-separated per-axis ints (default 1)")
    p.add_argument("--padding", default="same", help="same, valid, or int(s) (default same)")
    p.add_argument("--dilation", default="1", help="int or comma-separated ints (default 1)")
    p.add_argument("--normalize", action="store_true", help="normalise the adaptive kernel per window")
    p.add_argument("--backend", choices=("cpu", "cuda"), default=None,
                   help="where the kernels run (default cpu for files; cuda needs a GPU)")
    p.set_defaults(func=_run)
