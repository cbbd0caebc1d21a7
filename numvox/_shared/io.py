"""Array files for the command line: the format follows the file name's extension.

=================  ==========================================================================
``.npy``           one array (``numpy.load`` without pickles)
``.npz``           ``FILE.npz`` holding one array, or ``FILE.npz:KEY``; written under ``arr``
``.zarr``          a Zarr array directory (needs ``zarr``)
``.nii``/``.nii.gz``  NIfTI-1/2 (needs ``nibabel``): read with its scaling applied, in the
                   file's axis order; written with the spatial axes first (what NIfTI viewers
                   expect) and the affine of the NIfTI input, when there is one
=================  ==========================================================================

Every failure a user can cause (a missing file, an unknown extension, a file that is not what
its extension says, a missing optional package) raises :class:`UserError` with one line that
names the file and what to do; the command line prints it and exits with status 2.
"""

import os
from dataclasses import dataclass

READ_FORMATS = (".npy", ".npz", ".zarr", ".nii", ".nii.gz")
WRITE_FORMATS = READ_FORMATS


class UserError(Exception):
    """A mistake of the caller: reported as one line, exit status 2."""


def file_format(path):
    """The format of ``path`` from its extension (one of :data:`READ_FORMATS`), else None."""
    name = path.rstrip("/").lower()
    if ".npz:" in name:
        return ".npz"
    for ext in (".nii.gz", ".npy", ".npz", ".zarr", ".nii"):
        if name.endswith(ext):
            return ext
    return None


def _formats():
    return ", ".join(READ_FORMATS)


def _need(module, fmt, path):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{path!r}: {fmt} files need the {module} package (pip install {module})") from None


def load_array(path, name="input"):
    """Read the array in ``path`` (format from its extension, see the module docstring).

    Parameters
    ----------
    path : str
        ``.npy``, ``.npz`` (``FILE.npz:KEY`` picks one array), ``.zarr``, ``.nii``, ``.nii.gz``.
    name : str
        What the file is, for error messages (``"volume"``, ``"PROBS"``).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    UserError
        The file does not exist, has another extension, cannot be read as its format, holds
        pickled Python objects, or its format's package is not installed.
    """
    fmt = file_format(path)
    file_path = path.rsplit(":", 1)[0] if fmt == ".npz" and ".npz:" in path.lower() else path
    if not os.path.exists(file_path):
        raise UserError(f"{name} file {file_path!r} does not exist")
    if fmt is None:
        ext = os.path.splitext(file_path)[1] or "(no extension)"
        raise UserError(f"{name} file {file_path!r}: cannot read {ext} files; numvox reads {_formats()}")
    if fmt in (".npy", ".npz"):
        return _load_numpy(path, file_path, fmt, name)
    import numpy as np

    try:
        if fmt == ".zarr":
            zarr = _need("zarr", ".zarr", file_path)
            return np.asarray(zarr.open_array(file_path, mode="r")[...])
        nib = _need("nibabel", "NIfTI", file_path)
        return np.asarray(_nifti_image(nib, file_path, name).dataobj)
    except UserError:
        raise
    except Exception as exc:  # each format's reader raises its own types for a broken file
        raise UserError(f"cannot read {name} file {file_path!r} as {fmt}: {exc}") from None


def _nifti_image(nib, path, name):
    try:
        return nib.load(path)
    except Exception as exc:  # nibabel raises several types for a file that is no NIfTI
        raise UserError(f"cannot read {name} file {path!r} as NIfTI: {exc}") from None


def _load_numpy(path, file_path, fmt, name):
    import numpy as np

    key = path.rsplit(":", 1)[1] if file_path != path else None
    try:
        data = np.load(file_path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) and "Object arrays" in str(exc):
            raise UserError(f"{name} file {file_path!r} holds Python objects, not numbers; numvox reads "
                            "numeric arrays only") from None
        raise UserError(f"cannot read {name} file {file_path!r}: it is not a NumPy {fmt} file") from None
    except OSError as exc:
        raise UserError(f"cannot read {name} file {file_path!r}: {exc}") from None
    if isinstance(data, np.ndarray):
        if fmt == ".npz":
            raise UserError(f"{name} file {file_path!r} is a .npy file named .npz; rename it")
        return data
    if fmt == ".npy":
        data.close()
        raise UserError(f"{name} file {file_path!r} is a .npz archive named .npy; rename it")
    with data:
        keys = list(data.keys())
        if key is None:
            if len(keys) != 1:
                raise UserError(f"{file_path!r} holds arrays {keys}; name one as {file_path}:KEY")
            key = keys[0]
        if key not in keys:
            raise UserError(f"{file_path!r} has no array {key!r}; it holds {keys}")
        try:
            return data[key]
        except ValueError:
            raise UserError(f"array {key!r} of {file_path!r} holds Python objects, not numbers") from None


def read_affine(path):
    """The voxel-to-world affine of a NIfTI file (for writing outputs in the same space), or
    None for other formats or when nibabel is missing."""
    if file_format(path) not in (".nii", ".nii.gz"):
        return None
    try:
        import nibabel
    except ImportError:
        return None
    try:
        return nibabel.load(path).affine
    except Exception:  # unreadable: load_array reports it
        return None


def check_output(path, option="-o/--output"):
    """Refuse an output path whose format is unknown or whose folder does not exist, before
    any work is done.

    Raises
    ------
    UserError
        Naming ``option``, the path and the formats that can be written.
    """
    fmt = file_format(path)
    if fmt is None or ".npz:" in path.lower():
        raise UserError(f"{option} {path!r}: unknown output format; use a name ending in {_formats()}")
    folder = os.path.dirname(os.path.abspath(path.rstrip("/")))
    if not os.path.isdir(folder):
        raise UserError(f"{option} {path!r}: folder {folder!r} does not exist")
    if fmt == ".zarr":
        _need("zarr", ".zarr", path)
    elif fmt in (".nii", ".nii.gz"):
        _need("nibabel", "NIfTI", path)
    return path


@dataclass
class Written:
    """One output file: its path, the array's shape and dtype, and an optional remark."""

    path: str
    shape: tuple
    dtype: str
    note: str = ""

    def describe(self):
        if not self.dtype:
            return f"{self.path} ({self.note})"
        shape = "x".join(str(n) for n in self.shape) if self.shape else "scalar"
        text = f"{self.path} ({shape} {self.dtype})"
        return f"{text}, {self.note}" if self.note else text


def save_array(path, array, *, affine=None, spatial_axes=(0, 1, 2)):
    """Write ``array`` to exactly ``path``, in the format of its extension.

    Parameters
    ----------
    path : str
        ``.npy``, ``.npz`` (stored under the key ``arr``), ``.zarr``, ``.nii``, ``.nii.gz``.
    array : array_like
    affine : (4, 4) array, optional
        NIfTI voxel-to-world transform (e.g. :func:`read_affine` of the input); identity if None.
    spatial_axes : tuple of int
        The array's spatial axes; NIfTI files get them first, the other axes after them in
        order.  Ignored for the other formats, which store the array as it is.

    Returns
    -------
    Written

    Raises
    ------
    UserError
        Unknown extension, missing package, or the file cannot be written.
    """
    import numpy as np

    check_output(path)
    fmt = file_format(path)
    a = np.asarray(array)
    try:
        if fmt == ".npy":
            with open(path, "wb") as f:  # np.save(path) would append .npy to other names
                np.save(f, a)
        elif fmt == ".npz":
            with open(path, "wb") as f:
                np.savez_compressed(f, arr=a)
        elif fmt == ".zarr":
            _save_zarr(path, a)
        else:
            _save_nifti(path, a, affine, spatial_axes)
    except OSError as exc:
        raise UserError(f"cannot write {path!r}: {exc}") from None
    return Written(path, tuple(a.shape), str(a.dtype))


def _save_zarr(path, a):
    import shutil

    zarr = _need("zarr", ".zarr", path)
    if os.path.isdir(path):
        shutil.rmtree(path)
    z = zarr.open_array(path, mode="w", shape=a.shape, dtype=a.dtype)
    z[...] = a


def _save_nifti(path, a, affine, spatial_axes):
    import numpy as np

    nib = _need("nibabel", "NIfTI", path)
    spatial = [ax % a.ndim for ax in spatial_axes if -a.ndim <= ax < a.ndim]
    if spatial:
        a = np.moveaxis(a, spatial, range(len(spatial)))
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if a.dtype == np.float16:  # NIfTI has no float16 code
        a = a.astype(np.float32)
    image = nib.Nifti1Image(np.ascontiguousarray(a), np.eye(4) if affine is None else affine)
    nib.save(image, path)


def summary(command, written, seconds):
    """The one line each data subcommand prints on stderr when it has written its outputs."""
    outputs = "; ".join(w.describe() for w in written)
    return f"numvox {command}: wrote {outputs} in {seconds:.2f} s"
