"""``numvox labels VOLUME -o LABELS [--border inside|zero] [--basins BASINS]``, and
``numvox labels BIG.zarr -o LABELS.zarr --dask [--scheduler ADDRESS] [--basins BASINS.zarr]``
on Dask (:func:`run_labels`; inputs, outputs and progress as in :mod:`numvox.dask.cli`)."""

from numvox.cli import FORMATS_HELP, UserError, add_output_arguments, check_output, load_array, read_affine, save_array


def register(subparsers):
    p = subparsers.add_parser(
        "labels",
        help="steepest-descent 3x3x3 labels (and descent basins) of a 3-D volume",
        description=(
            "Label every voxel of a 3-D volume with the neighbour code (0..26, 13 = local "
            "minimum) of its steepest descent; optionally write the descent basins (int32 ids)."
        ),
    )
    p.add_argument("volume", help=f"input volume, 3-D, any real dtype: {FORMATS_HELP} (.npz: FILE.npz:KEY)")
    add_output_arguments(p, "the labels (uint8, the volume's shape)")
    p.add_argument("--border", choices=("inside", "zero"), default="inside",
                   help="'inside' (default): only in-volume neighbours; 'zero': outer layer labelled 0")
    p.add_argument("--basins", metavar="FILE", help="also write the descent basins (int32, 1..M) to exactly FILE")
    p.add_argument("--backend", choices=("cpu", "cuda"), default=None,
                   help="where the kernels run (default cpu for files; cuda needs a GPU)")
    from numvox.dask.cli import add_dask_arguments  # imports no Dask until --dask is used

    add_dask_arguments(p)
    p.set_defaults(func=_run)


def _run(args):
    if args.basins:
        check_output(args.basins, "--basins")
    if args.dask:
        return run_labels(args)  # prints its own summary line
    import numpy as np

    from ._api import descent_basins, descent_labels

    volume = load_array(args.volume, "volume")
    if volume.dtype == object or volume.dtype.kind not in "biuf":
        raise UserError(f"volume has dtype {volume.dtype}; expected a real numeric dtype")
    affine = read_affine(args.volume)
    labels = descent_labels(volume, border=args.border, backend=args.backend)
    written = [save_array(args.output, labels, affine=affine)]
    if args.basins:
        basins = np.asarray(descent_basins(volume, backend=args.backend))
        written.append(save_array(args.basins, basins, affine=affine))
        written[-1].note = f"{int(basins.max()) if basins.size else 0} basins"
    return written


def run_labels(args):
    """The ``--dask`` path of ``numvox labels``: labels (and basins) chunk by chunk.

    ``args`` has the labels subcommand's ``volume``, ``output``, ``border``, ``basins`` and
    ``backend`` plus ``add_dask_arguments``' ``scheduler`` and ``chunks``.

    Prints the command line's summary line on stderr (unless ``args.quiet``); returns 0.
    """
    import sys
    import time

    from numvox._shared.io import Written, summary
    from numvox.dask.cli import compute, is_local, open_volume, output_target

    from ._dask import descent_basins_dask, descent_labels_dask

    t0 = time.perf_counter()
    x = open_volume(args.volume, getattr(args, "chunks", None))
    border = getattr(args, "border", "inside")
    backend = getattr(args, "backend", None)
    basins_path = getattr(args, "basins", None)
    address = getattr(args, "scheduler", None)
    local = is_local(address)
    labels = descent_labels_dask(x, border=border, backend=backend)
    work, gather = [], []
    store, later = output_target(labels, args.output, local)
    work.append(store) if store is not None else gather.append(("labels", later, args.output))
    written = [Written(args.output, tuple(x.shape), str(labels.dtype), note=f"{x.npartitions} chunks")]
    nbasins = None
    if basins_path:
        basins = descent_basins_dask(x, backend=backend)
        store, later = output_target(basins, basins_path, local)
        work.append(store) if store is not None else gather.append(("basins", later, basins_path))
        nbasins = basins.max() if basins.size else None
        written.append(Written(basins_path, tuple(x.shape), str(basins.dtype)))
    todo = work + [g[1] for g in gather] + ([nbasins] if nbasins is not None else [])
    results = compute(todo, address)
    for (_, _, path), value in zip(gather, results[len(work):len(work) + len(gather)]):
        save_array(path, value)
    if basins_path:
        written[-1].note = f"{int(results[-1]) if nbasins is not None else 0} basins"
    if not getattr(args, "quiet", False):
        print(summary("labels", written, time.perf_counter() - t0), file=sys.stderr)
    return 0
