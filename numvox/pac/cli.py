"""``numvox pac X GUIDE WEIGHT OUT``: pixel-adaptive convolution of .npy/.npz arrays."""


def _ints(text, name):
    from numvox.cli import UserError

    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--{name} must be an int or comma-separated ints (one per axis); got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _run(args):
    from numvox.cli import load_array, save_array

    from ._api import pac_conv

    x = load_array(args.x, "x")
    guide = load_array(args.guide, "guide")
    weight = load_array(args.weight, "weight")
    bias = load_array(args.bias, "bias") if args.bias else None
    padding = args.padding if args.padding.lower() in ("same", "valid") else _ints(args.padding, "padding")
    out = pac_conv(x, guide, weight, bias, stride=_ints(args.stride, "stride"), padding=padding,
                   dilation=_ints(args.dilation, "dilation"), normalize=args.normalize, backend=args.backend)
    save_array(args.out, out)
    return 0


def register(subparsers):
    p = subparsers.add_parser(
        "pac",
        help="pixel-adaptive convolution (channels-last x, guide; TF-layout weight)",
        description="out = pac_conv(x, guide, weight, bias): x (N,[D,]H,W,C), guide (N,[D,]H,W,F), "
        "weight ([kd,]kh,kw,C,O); 2-D or 3-D from the weight's rank.",
    )
    p.add_argument("x", help="input .npy/.npz (FILE.npz:KEY)")
    p.add_argument("guide", help="guide features .npy/.npz")
    p.add_argument("weight", help="filter .npy/.npz")
    p.add_argument("out", help="output .npy (or .npz)")
    p.add_argument("--bias", help="bias .npy of shape (O,)")
    p.add_argument("--stride", default="1", help="int or comma-separated per-axis ints (default 1)")
    p.add_argument("--padding", default="same", help="same, valid, or int(s) (default same)")
    p.add_argument("--dilation", default="1", help="int or comma-separated ints (default 1)")
    p.add_argument("--normalize", action="store_true", help="normalise the adaptive kernel per window")
    p.add_argument("--backend", choices=("cpu", "cuda"), default=None)
    p.set_defaults(func=_run)
