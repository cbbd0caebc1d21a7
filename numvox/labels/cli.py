"""``numvox labels VOLUME.npy -o LABELS.npy [--border inside|zero] [--basins BASINS.npy]``,
and ``numvox labels big.zarr -o labels.zarr --dask [--scheduler ADDRESS]`` on Dask."""

from numvox.cli import UserError, load_array, save_array


def register(subparsers):
    p = subparsers.add_parser(
        "labels",
        help="steepest-descent 3x3x3 labels (and descent basins) of a 3-D volume",
        description=(
            "Label every voxel of a 3-D volume with the neighbour code (0..26, 13 = local "
            "minimum) of its steepest descent; optionally write the descent basins (int32 ids)."
        ),
    )
    p.add_argument("volume", help="input volume (.npy, or .npz / FILE.npz:KEY), 3-D, any real dtype")
    p.add_argument("-o", "--output", required=True, help="output labels file (.npy; uint8)")
    p.add_argument("--border", choices=("inside", "zero"), default="inside",
                   help="'inside' (default): only in-volume neighbours; 'zero': outer layer labelled 0")
    p.add_argument("--basins", metavar="BASINS.npy", help="also write the descent basins (int32, 1..M)")
    p.add_argument("--backend", choices=("cpu", "cuda"), default=None, help="force a backend")
    from numvox.dask.cli import add_dask_arguments  # imports no Dask until --dask is used

    add_dask_arguments(p)
    p.set_defaults(func=_run)


def _run(args):
    if args.dask:
        from numvox.dask.cli import run_labels

        return run_labels(args)
    import numpy as np

    from ._api import descent_basins, descent_labels

    volume = load_array(args.volume, "volume")
    if volume.dtype == object or volume.dtype.kind not in "biuf":
        raise UserError(f"volume has dtype {volume.dtype}; expected a real numeric dtype")
    labels = descent_labels(volume, border=args.border, backend=args.backend)
    save_array(args.output, np.asarray(labels))
    msg = f"labels {tuple(volume.shape)} -> {args.output}"
    if args.basins:
        basins = np.asarray(descent_basins(volume, backend=args.backend))
        save_array(args.basins, basins)
        msg += f"; {int(basins.max()) if basins.size else 0} basins -> {args.basins}"
    print(msg)
    return 0
