"""``numvox votes PROBS OFFSETS -o HEATMAPS [--peaks peaks.csv]``."""

from ._rules import LAYOUTS, SPLATS


def register(subparsers):
    from numvox.cli import add_output_arguments

    p = subparsers.add_parser(
        "votes",
        help="aggregate landmark votes (probabilities + offsets) into heatmaps and peaks",
        description=(
            "Aggregate per-voxel landmark votes into heatmaps (numvox.aggregate_votes) and "
            "optionally write the landmark positions (numvox.heatmap_peaks) as CSV."
        ),
    )
    p.add_argument("probs", metavar="PROBS", help="array file, (X, Y, Z, L+1) or (B, X, Y, Z, L+1)")
    p.add_argument("offsets", metavar="OFFSETS", help="array file, (X, Y, Z, 3L) or (B, X, Y, Z, 3L)")
    add_output_arguments(p, "the heatmaps, float32 (L, X, Y, Z) or (B, L, X, Y, Z) (NIfTI: X, Y, Z first)")
    p.add_argument("--threshold", type=float, default=0.5, help="minimum probability of a vote (default 0.5)")
    p.add_argument("--splat", choices=SPLATS, default="nearest",
                   help="where a vote lands: the nearest voxel, or split trilinearly (default nearest)")
    p.add_argument(
        "--offset-layout", choices=LAYOUTS, default="axis-major",
        help="channel order of OFFSETS (default axis-major: offsets[..., a*L + l])",
    )
    p.add_argument("--peaks", metavar="CSV", help="also write the peaks: batch,landmark,x,y,z,value")
    p.add_argument("--radius", type=int, default=1, help="centroid window half-width for --peaks (default 1)")
    p.add_argument("--backend", choices=("cpu", "cuda"), default=None,
                   help="where the kernels run (default cpu for files; cuda needs a GPU)")
    p.set_defaults(func=_run)


def _run(args):
    from numvox.cli import UserError, load_array, read_affine, save_array

    from ._api import aggregate_votes, heatmap_peaks

    probs = load_array(args.probs, "PROBS")
    offsets = load_array(args.offsets, "OFFSETS")
    if args.radius < 0:
        raise UserError(f"--radius must be >= 0; got {args.radius}")
    heat = aggregate_votes(
        probs, offsets, threshold=args.threshold, splat=args.splat,
        offset_layout=args.offset_layout, backend=args.backend,
    )
    written = [save_array(args.output, heat, affine=read_affine(args.probs), spatial_axes=(-3, -2, -1))]
    if args.peaks:
        written.append(_write_peaks(args.peaks, *heatmap_peaks(heat, radius=args.radius, backend=args.backend)))
    return written


def _write_peaks(path, coords, values):
    import numpy as np

    from numvox._shared.io import Written
    from numvox.cli import UserError

    coords, values = np.asarray(coords), np.asarray(values)
    if coords.ndim == 2:
        coords, values = coords[None], values[None]
    lines = ["batch,landmark,x,y,z,value"]
    for b in range(coords.shape[0]):
        for l in range(coords.shape[1]):
            x, y, z = (repr(float(v)) for v in coords[b, l])
            lines.append(f"{b},{l},{x},{y},{z},{float(values[b, l])!r}")
    try:
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {path!r}: {exc}") from None
    return Written(path, (), "", note=f"{len(lines) - 1} peaks, CSV")
