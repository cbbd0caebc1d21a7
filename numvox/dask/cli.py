"""Command-line helpers for subcommands that run on Dask (``numvox labels ... --dask``).

:func:`add_dask_arguments` adds ``--dask``, ``--scheduler ADDRESS`` and ``--chunks``.
Inputs (:func:`open_volume`): a Zarr array (a ``.zarr`` directory or any path
``dask.array.from_zarr`` opens) or a ``.npy`` file (memory-mapped and read chunk by chunk by
the workers).  Outputs (:func:`output_target`): ``.zarr`` (written chunk by chunk by the
workers; the way to go for volumes larger than memory) or ``.npy`` (gathered into this
process first, or written through a memory map by a local scheduler's threads).
:func:`compute` runs the work with a progress bar: ``dask.diagnostics.ProgressBar`` on the
local scheduler, ``distributed.progress`` on a cluster.  Importing this module does not
import Dask.
"""

import os
import sys

from numvox.cli import UserError

LOCAL_SCHEDULERS = ("threads", "processes", "synchronous", "sync")


def add_dask_arguments(parser):
    """Add ``--dask``, ``--scheduler ADDRESS`` and ``--chunks`` to a subcommand's parser."""
    g = parser.add_argument_group("Dask (volumes larger than memory)")
    g.add_argument("--dask", action="store_true",
                   help="run chunk by chunk on Dask (input and outputs may be .zarr directories)")
    g.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="a distributed scheduler (e.g. tcp://10.0.0.1:8786) or a local Dask "
                        "scheduler: threads (default), processes, synchronous")
    g.add_argument("--chunks", metavar="N|A,B,C", default=None,
                   help="chunk shape (default: the Zarr input's chunks, or Dask's 'auto' for .npy)")
    return parser


def parse_chunks(text):
    """``None``/``"auto"`` -> ``"auto"``; ``"64"`` -> 64; ``"32,64,64"`` -> (32, 64, 64)."""
    if text is None or str(text).strip().lower() == "auto":
        return "auto"
    try:
        parts = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        raise UserError(f"--chunks must be 'auto', N or A,B,C (positive integers); got {text!r}") from None
    if any(p < 1 for p in parts) or len(parts) not in (1, 3):
        raise UserError(f"--chunks must be 'auto', N or A,B,C (positive integers); got {text!r}")
    return parts[0] if len(parts) == 1 else parts


class NpyFile:
    """A ``.npy`` file as a lazily read array: pickles as its path, so Dask workers open
    (memory-map) it themselves instead of receiving its data."""

    def __init__(self, path):
        import numpy as np

        self.path = os.path.abspath(path)
        arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __getitem__(self, index):
        import numpy as np

        return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[index])

    def __reduce__(self):
        return (NpyFile, (self.path,))


def is_zarr(path):
    return path.rstrip("/").endswith(".zarr") or os.path.isdir(path)


def open_volume(path, chunks=None):
    """A Dask array reading ``path`` (.zarr or .npy), rechunked to ``chunks`` if given."""
    import dask.array as da

    if not os.path.exists(path):
        raise UserError(f"volume file {path!r} does not exist")
    spec = parse_chunks(chunks)
    if is_zarr(path):
        try:
            x = da.from_zarr(path)
        except Exception as exc:  # zarr raises several types for a non-array path
            raise UserError(f"cannot open {path!r} as a Zarr array: {exc}") from None
        return x if chunks is None else x.rechunk(spec)
    if path.endswith(".npy"):
        try:
            src = NpyFile(path)
        except (ValueError, OSError) as exc:
            raise UserError(f"cannot read volume file {path!r} as .npy: {exc}") from None
        if src.dtype == object or src.dtype.kind not in "biuf":
            raise UserError(f"volume has dtype {src.dtype}; expected a real numeric dtype")
        return da.from_array(src, chunks=spec, meta=__import__("numpy").empty((0,) * src.ndim, src.dtype))
    raise UserError(f"with --dask the volume must be a .zarr array or a .npy file; got {path!r}")


def _regular(x):
    """``x`` rechunked to regular chunks when it has irregular ones (Zarr needs them)."""
    regular = all(len(set(c[:-1])) <= 1 and (len(c) < 2 or c[-1] <= c[0]) for c in x.chunks)
    return x if regular else x.rechunk(x.chunksize)


def output_target(x, path, local):
    """``(delayed store, None)`` writing ``x`` to ``path``, or ``(None, x)`` for an .npy output
    that is gathered and saved after the computation (``local``: the scheduler runs in this
    process, whose threads can write into a memory-mapped .npy directly)."""
    import dask.array as da

    if is_zarr(path):
        return da.to_zarr(_regular(x), path, overwrite=True, compute=False), None
    if not path.endswith(".npy"):
        raise UserError(f"with --dask outputs must be .zarr directories or .npy files; got {path!r}")
    if local:  # threads of this process can write into a memory-mapped .npy directly
        import numpy as np

        mm = np.lib.format.open_memmap(path, mode="w+", dtype=x.dtype, shape=x.shape)
        return da.store(x, mm, lock=False, compute=False), None
    return None, x


def is_local(address):
    """True when ``--scheduler`` names this process's scheduler (or none was given)."""
    return address is None or address in LOCAL_SCHEDULERS


def compute(todo, address):
    """Compute ``todo`` (a list of Dask collections) with a progress bar; return the values."""
    import dask

    if is_local(address):
        from dask.diagnostics import ProgressBar

        scheduler = "threads" if address is None else ("synchronous" if address == "sync" else address)
        with ProgressBar(out=sys.stderr):
            return list(dask.compute(*todo, scheduler=scheduler))
    try:
        from distributed import Client, progress
    except ImportError as exc:  # pragma: no cover - distributed is installed with numvox[dask]
        raise UserError("--scheduler ADDRESS needs the 'distributed' package") from exc
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise UserError(f"cannot connect to the Dask scheduler at {address!r}: {exc}") from None
    try:
        futures = client.compute(todo)
        progress(futures)
        print(file=sys.stderr)
        return client.gather(futures)
    finally:
        client.close()
