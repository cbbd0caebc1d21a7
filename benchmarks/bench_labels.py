"""Steepest-descent labels and descent basins (issue 4) against the seed's NumPy answer,
the memory floor, and scikit-image's watershed."""

import numpy as np

from ._harness import Baseline, Case

SECTION = "Steepest-descent labels and basins"

NOTES = """
* **Kernel.** Per voxel the 26 scores reduce to three distance classes: within a class the
  weight is shared, so its best neighbour is its smallest value (smallest code on ties).
  The class minima separate along the axes and are shared between neighbouring voxels: per
  plane, row minima `H`, in-plane diagonals `G` and in-plane faces `Q` (with their codes);
  per voxel, corners = min(G-, G+), edges = min(Q-, G0, Q+), faces = min(v-, Q0, v+), then
  the three scores and a code comparison only between classes.  9 compare-selects per
  voxel instead of 26 (`numvox/labels/_cpu.py`), vectorised over the last axis; tiles of
  64 x 16 x 256 voxels, one ~0.36 MiB scratch buffer per thread.  Each stage is one flat
  loop over a whole tile plane (row pitch 264, the padding columns computed and ignored),
  so loop set-up and LLVM's runtime alias checks are paid per plane, not per row; one pass
  computes the next plane's `G`/`Q` and, with them in registers, the middle plane's labels;
  the labels go to a flat uint8 plane and then into the output rows with a unit-stride copy
  (writing them straight into `out[i, j, k0 + r]` had compiled to a 16-lane scatter of
  single bytes); the next input plane is prefetched while the current one is computed, and
  the scratch parts start at offsets (mod 4 KiB) where no stored stream seems to alias a
  loaded one.
* **Where the time goes** (this machine: AMD EPYC family 26 = Zen 5, AVX-512; 256^3
  float32, one thread, CPU time, pieces switched off in turn, measured while other jobs
  shared the machine): ~21 ms = filling the scratch ring from the volume ~5.6 ms (reads the
  64 MiB from DRAM; ~7 ms without the prefetch) + row minima ~1.3 ms + `G`/`Q` ~3.8 ms +
  the per-voxel labels ~10.5 ms (the fused pass) + copying labels out ~0 ms (hidden).  The
  previous kernel (per-row loops, scattered label writes) took ~35 ms of CPU time on one
  thread here.  Both cores, side by side in one process on a quiet machine (medians of
  21): previous kernel 18.4 ms, this one 10.6 ms, `volume.sum()` 3.1 ms (5.8x -> 3.4x);
  smoothed noise 18.9 -> 10.5 ms.
  int16 (float64 scores: 8 lanes, twice the vector work) and float64 take ~35 / ~40 ms on
  one thread, about as before; float16 34 ms (was 46).
* **Labels vs the seed.** `create_label2` (seed 003's `sliding_window_view` answer, in
  `benchmarks/baselines_labels.py`) builds several `(n-2)^3 x 27` temporaries (float32 and
  float64): its peak extra memory is tens of times the 64 MiB input.  numvox reads each input
  plane once into a ring of three scratch planes per tile (O(tile) memory) and writes 1 B per
  voxel; its "peak extra" is the 16 MiB uint8 result (25 % of the input) plus tiles, i.e.
  about 0 % of the input beyond the output.  The seed's time is measured on the full volume
  once (repeat 1).
* **First call.** Each case's kernels are loaded by a tiny warm-up call before it is
  measured (so that Numba's cache-load allocations do not show up as peak memory); a cold
  process needs ~1 s to load them from the on-disk cache, and ~15 s per input dtype to
  compile them the very first time (measured here with an empty cache: float32 17 s, int16
  15 s, float16 14 s).
* **Memory floor.** The "memory floor: volume.sum()" row is NumPy's single-threaded sum of
  the same float32 volume; its "speed-up" column is floor time / numvox time, so the issue's
  "within 5x of the floor" reads as a value >= 0.2x.  numvox runs on both cores.
* **Basins vs watershed.** `skimage.segmentation.watershed(volume, markers)` with markers =
  26-connected local minima (`ndimage.minimum_filter` + `ndimage.label`, included in its
  time) on a smoothed random volume; measured on 128^3 and scaled by 8 (voxel ratio; the
  priority-flood is O(N log N), so the scaled figure flatters the baseline slightly).  The
  two answers differ by design: watershed floods from markers, descent basins follow each
  voxel's steepest-descent pointer.  Basins' time is mostly the union-find (labels are
  ~10 % of it).
* **CUDA path on paper (H100, ~3 TB/s, ~60 TFLOP/s fp32).** Labels: 8^3 outputs per block
  from a 10^3 shared tile: 4 B x (10/8)^3 ~ 7.8 B read (halo re-reads mostly hit L2, so
  ~4-5 B from HBM) + 1 B written per voxel; 256^3 -> ~85-130 MB -> ~30-45 us; 26 x 4 flops
  per voxel -> 1.7 GFLOP -> ~30 us, so ~50 us per 256^3 volume (the CUDA kernel still does
  the direct 26-way comparison; the class-minimum form would cut its arithmetic, not its
  memory traffic).  Basins: each hook/jump
  round reads the labels (1 B) and 2-3 int32 parents per voxel, mostly random for the
  targets: ~12 B/voxel/round; typically 5-15 rounds at 256^3 -> 1-3 GB -> 0.3-1 ms, plus a
  host sync per round (~10 us) and the numbering (3 passes, ~25 B/voxel).
"""


def _smooth_volume(n, seed=1):
    from scipy import ndimage

    v = np.random.default_rng(seed).random((n, n, n), dtype=np.float32)
    return ndimage.gaussian_filter(v, 2.0)


def cases(quick, backend):
    import numvox

    from .baselines_labels import create_label2, local_minima_markers

    n = 64 if quick else 256
    v = np.random.default_rng(0).random((n, n, n), dtype=np.float32)
    # Load the compiled kernels (same signatures) before measuring, so that the cold call's
    # cache-load allocations do not count as the kernel's peak extra memory.
    for dtype in (np.float32, np.int16):
        numvox.descent_basins(np.zeros((4, 4, 4), dtype), backend=backend)
        numvox.descent_labels(np.zeros((4, 4, 4), dtype), out=np.empty((4, 4, 4), np.uint8), backend=backend)
    out = None if backend != "cpu" else np.ones(v.shape, np.uint8)  # pages touched: not "extra"
    yield Case(
        f"descent_labels {n}^3 float32 (out=)",
        numvox=lambda: numvox.descent_labels(v, out=out, backend=backend),
        baselines=[
            Baseline("seed create_label2 (NumPy, border=zero)", lambda: create_label2(v), repeat=1),
            Baseline("memory floor: volume.sum() (ratio, not a speed-up)", lambda: v.sum(), repeat=9),
        ],
        repeat=9,
    )
    yield Case(
        f"descent_labels {n}^3 float32 (new output)",
        numvox=lambda: numvox.descent_labels(v, backend=backend),
        baselines=[Baseline("memory floor: volume.sum() (ratio, not a speed-up)", lambda: v.sum(), repeat=9)],
        repeat=9,
    )
    ct = (v * 4000 - 1000).astype(np.int16)
    yield Case(
        f"descent_labels {n}^3 int16 (CT-like, float64 scores)",
        numvox=lambda: numvox.descent_labels(ct, backend=backend),
        baselines=[Baseline("memory floor: ct.sum()", lambda: ct.sum(), repeat=9)],
        repeat=5,
    )

    s = _smooth_volume(n)
    m = 32 if quick else 128
    small = _smooth_volume(m)
    scale = (n / m) ** 3

    def skimage_watershed():
        from skimage.segmentation import watershed

        return watershed(small, local_minima_markers(small))

    yield Case(
        f"descent_basins {n}^3 float32 (smoothed noise)",
        numvox=lambda: numvox.descent_basins(s, backend=backend),
        baselines=[
            Baseline(f"skimage watershed, markers = local minima ({m}^3 x {scale:g})", skimage_watershed,
                     repeat=1, scale=scale),
        ],
        repeat=3,
    )
    if not quick:
        big = np.random.default_rng(2).random((300, 300, 300), dtype=np.float32)
        yield Case("descent_basins 300^3 float32 (white noise)",
                   numvox=lambda: numvox.descent_basins(big, backend=backend), repeat=2)
