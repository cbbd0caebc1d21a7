"""Synthetic 3-D "anatomy" phantoms with landmarks, deterministic given a seed (NumPy only).

A phantom is a textured ellipsoidal *body* placed at a random position with a random
rotation and random size, containing two inner structures: a bright ellipsoidal *organ*
towards one end of the body's long axis and a dark spherical *cavity* towards the other end,
off-axis.  Because the organ and the cavity break the body's symmetries, three landmarks are
anatomically well defined, and a model must look at the whole body to find the third:

====  ===========================  =========================================================
 l    name                         position (body frame: long axis u0, then u1, u2)
====  ===========================  =========================================================
 0    ``organ_centre``             centre of the bright organ, ``(+0.45 a0, 0, 0)``
 1    ``cavity_centre``            centre of the dark cavity, ``(-0.30 a0, +0.40 a1, 0)``
 2    ``apex``                     tip of the long axis on the cavity's side, ``(-a0, 0, 0)``
====  ===========================  =========================================================

Landmark coordinates are float voxel indices ``(x, y, z)`` into ``volume[x, y, z]`` (voxel
centres at integers).  Training uses seeds from :data:`TRAIN_SEED_BASE` upwards; seeds
below it (the demo's default ``0``, the tests' ``0..99``) are never trained on.
"""

import numpy as np
from scipy import ndimage

LANDMARK_NAMES = ("organ_centre", "cavity_centre", "apex")
N_LANDMARKS = len(LANDMARK_NAMES)
DEFAULT_SHAPE = (32, 32, 32)
DEFAULT_RADIUS = 3.0  # radius of the class spheres around landmarks (training targets)
TRAIN_SEED_BASE = 1_000_000  # training phantoms use seeds >= this; evaluation seeds < it
MAX_ROTATION_DEG = 45.0


def _rotation(rng, max_deg):
    """A rotation matrix about a random axis by an angle uniform in [-max_deg, max_deg]."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def generate_phantom(seed=0, shape=DEFAULT_SHAPE, scale=None):
    """Generate a phantom volume and its landmarks.

    Parameters
    ----------
    seed : int
        Random seed (non-negative); the same seed always gives the same phantom.
    shape : tuple of 3 ints
        Volume shape; each axis at least 16.
    scale : float or None
        Size of the anatomy relative to its design at 32³ (where the bundled model was
        trained): ``1.0`` keeps that size in any volume (a larger volume is then a larger
        field of view, which the model handles); None scales it with the smallest axis,
        ``min(shape) / 32``.

    Returns
    -------
    volume : ndarray, float32, ``shape``
        Intensities roughly in [0, 1] (background ~0, body ~0.45, organ ~0.9, cavity ~0.1,
        plus smooth texture and noise).
    landmarks : ndarray, float64, ``(3, 3)``
        Landmark ``l`` at ``landmarks[l] = (x, y, z)`` (see the module docstring).

    Examples
    --------
    >>> vol, lms = generate_phantom(seed=3)
    >>> vol.shape, lms.shape
    ((32, 32, 32), (3, 3))
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be 3 ints, each >= 16; got {shape}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if scale is not None and not (np.isfinite(scale) and 0 < scale <= min(shape) / 32.0):
        raise ValueError(f"scale must be in (0, min(shape) / 32 = {min(shape) / 32.0:g}]; got {scale!r}")
    rng = np.random.default_rng(int(seed))
    unit = min(shape) / 32.0 if scale is None else float(scale)

    rot = _rotation(rng, MAX_ROTATION_DEG)
    centre = (np.array(shape, dtype=np.float64) - 1) / 2 + rng.uniform(-2.0, 2.0, size=3) * unit
    semi = np.array([rng.uniform(9.0, 11.0), rng.uniform(6.5, 8.0), rng.uniform(5.5, 6.5)]) * unit

    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), -1)
    body_coords = (grid - centre) @ rot  # body frame: u = R^T (p - c)

    def ellipsoid(centre_u, semi_u):
        return (((body_coords - centre_u) / semi_u) ** 2).sum(-1) <= 1.0

    organ_c = np.array([0.45 * semi[0], 0.0, 0.0])
    organ_semi = np.array([0.28 * semi[0], 0.35 * semi[1], 0.40 * semi[2]])
    cavity_c = np.array([-0.30 * semi[0], 0.40 * semi[1], 0.0])
    cavity_r = 0.30 * semi[1]
    apex = np.array([-semi[0], 0.0, 0.0])

    body = ellipsoid(np.zeros(3), semi)
    organ = ellipsoid(organ_c, organ_semi) & body
    cavity = ellipsoid(cavity_c, np.full(3, cavity_r)) & body

    texture = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    texture /= texture.std() + 1e-12
    vol = np.zeros(shape)
    vol[body] = rng.uniform(0.40, 0.50)
    vol[organ] = rng.uniform(0.85, 0.95)
    vol[cavity] = rng.uniform(0.05, 0.15)
    vol += 0.06 * texture * body
    vol = ndimage.gaussian_filter(vol, 0.6)
    vol += rng.normal(scale=0.04, size=shape)

    landmarks = centre + np.stack([organ_c, cavity_c, apex]) @ rot.T
    return vol.astype(np.float32), landmarks


def training_targets(landmarks, shape, radius=DEFAULT_RADIUS, offset_margin=2.0):
    """Dense targets of the landmark model for one phantom.

    Returns
    -------
    classes : ndarray, int32, ``shape``
        0 for background, ``l + 1`` within ``radius`` of landmark ``l`` (the nearest landmark
        where spheres overlap).
    offsets : ndarray, float32, ``shape + (3L,)``
        Axis-major: ``offsets[..., a*L + l] = landmarks[l, a] - voxel[a]``.
    offset_mask : ndarray, float32, ``shape + (L,)``
        1 within ``radius + offset_margin`` of landmark ``l`` (where its offsets are trained).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    n_lm = landmarks.shape[0]
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), -1)
    diff = landmarks[None, None, None, :, :] - grid[..., None, :]  # (X, Y, Z, L, 3)
    dist = np.sqrt((diff**2).sum(-1))  # (X, Y, Z, L)
    nearest = dist.argmin(-1)
    classes = np.where(dist.min(-1) <= radius, nearest + 1, 0).astype(np.int32)
    offsets = np.moveaxis(diff, -1, -2).reshape(*shape, 3 * n_lm).astype(np.float32)  # axis-major
    offset_mask = (dist <= radius + offset_margin).astype(np.float32)
    return classes, offsets, offset_mask
