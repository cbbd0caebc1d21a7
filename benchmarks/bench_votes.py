"""Vote aggregation (issue 3): numvox.aggregate_votes / heatmap_peaks against what a user
would otherwise run (see ``baselines_votes.py``)."""

import statistics
import time

import numpy as np

from . import _harness
from ._harness import Baseline, Case, MiB, cpu_seconds
from .baselines_votes import (
    make_tf_filter_scatter,
    numpy_bincount,
    numpy_peaks,
    read_floor,
    realistic_inputs,
    seed_loops,
    uniform_inputs,
)

SECTION = "Vote aggregation"

_NOTES_STATIC = """\
Inputs: `probs` (X, Y, Z, L+1) and `offsets` (X, Y, Z, 3L), float32, L = 3, threshold 0.5.
*spheres*: the realistic case, votes concentrated in spheres around the landmarks (about
10 % of the voxels vote; offsets point at the landmark plus 0.5 voxel of noise);
*uniform*: the question's own test data (normalised uniform probabilities, about 4 % of the
(voxel, landmark) pairs vote; offsets `100 * U(0, 1)`, most votes land inside the volume).
Baselines: *np.nonzero + np.bincount* is the best plain-NumPy approach (filter, gather,
one weighted bincount per landmark); *probs.sum(); offsets.sum()* reads both inputs once
with NumPy (the memory floor a scatter must not fall below; its "speed-up" is the ratio
read-floor time / numvox time); *seed loops* is the question's Python loop, measured at 70^3
and scaled by (300/70)^3 (it is linear in the voxel count); *TF filter + scatter* is the
question's vectorised `tf.where`/`tf.gather_nd` filter followed by `tf.tensor_scatter_nd_add`
(inside a `tf.function`).  "Peak extra" includes the output itself: `np.zeros` pages are
mapped when first written, so a heatmap that receives votes only near the landmarks costs
only those pages.

CPU kernel: one pass over `probs`.  Contiguous float32/float64 inputs (and float16/bfloat16,
as their uint16 bits compared against the bit range [smallest half >= threshold, +inf], for a
threshold > 0) are scanned as flat (b, x, y) lines of Z*(L+1) numbers: one 64-lane vector
compare per block of whole voxels (`_mask64`, emitted as LLVM IR so that it becomes
`vcmpps` + `vmovmskps`; it replaced a shift-and-or per number, which took the one-thread scan
of the 432 MB `probs` from 72 to 42 ms here) builds the block's 64-bit vote mask
(background channel masked out), `tzcnt` lists the votes, and only the offsets of voting
voxels are read.  Each thread runs a three-stage software pipeline over its lines: it finds
the votes of line t (prefetching their offsets), turns those of line t - 1 into targets
(branch-free, so the cache misses of scattered votes overlap) and adds those of line t - 2.
Strided and F-ordered inputs (and half precision with a threshold <= 0) run the same kernel
through a small float64 segment buffer.  Each thread owns the heatmap rows of its source
rows; votes crossing to another thread's rows go to a deferred list (bounded, lazily mapped:
at most half the output's bytes) that the owners add afterwards, so there are no atomics
and no copies of the output and peak extra memory stays within 1x the output.  The rows are
split between the threads by a sampled vote count (every 16th line, ~2 ms), as votes
cluster.

Where the time goes (this machine, an AMD EPYC Zen 1 VM with ~11 GB/s for one thread;
process CPU time of one thread, pre-zeroed output, pieces of the kernel switched off in
turn): *spheres* 109 ms = scan ~45 ms (memory-bound) + targets of the 2.7 M votes ~37 ms
(~14 ns each: float64 range checks, floor, index) + their offset reads ~26 ms + the adds
~2 ms (the votes hit the few voxels around each landmark, which stay in cache).  *uniform*
~220-260 ms = scan ~45 + targets of its 3.2 M votes ~60 + offset reads ~43 (the voting
voxels are scattered, so their offset lines come one by one) + the adds 75-110 ms (every
vote a random read-modify-write of DRAM across the 309 MiB heatmaps); a new output adds its
page faults (~50 ms on one thread for 309 MiB: the OS zeroes every page the votes reach).
Reading both inputs once with NumPy does none of the random work, which is why the uniform
case stays below the read floor.  Tried this session and dropped (no gain here): a
prefetch of each vote's heatmap line one pipeline stage ahead; binning the votes by heatmap
slab (512 KiB) and adding them slab by slab (the adds then hit cache, but writing and
reading the bins cost as much as the cache misses they saved: 213 vs 231 ms).

Noise: this 2-core VM shares its host; the same measurement moves by up to +-25 % between
runs minutes apart (the uniform case read 172-224 ms on 2 threads in this session's runs),
so every ratio below is one run, and the CPU-time lines after the table are the steadier
measure of each side's work.  `heatmap_peaks` uses NumPy's SIMD `argmax` on contiguous
NaN-free heatmaps and a parallel Numba row scan otherwise.

CUDA path, on paper (no GPU here; H100 at ~3.35 TB/s HBM3): the kernel reads `probs` once
(300^3 x 4 x 4 B = 432 MB, coalesced: a warp reads 32 consecutive voxels = 512 contiguous
bytes), the offsets of the voting voxels (~10 % of 27 M voxels, one or two 32-byte sectors of
their 36-byte offset row: ~0.17 GB) and zero-fills the 324 MB heatmaps: ~0.93 GB, i.e.
~0.3 ms at full bandwidth.  The ~2.7 M float32 `atomic.add`s (nearest; 8x for linear) are
resolved in L2; since most votes hit the few voxels around each landmark, same-address
contention rather than bandwidth is the risk (estimate 1-2 ms; warp-level pre-aggregation
would be the next step if a GPU measurement shows it).  `heatmap_peaks` reads the 324 MB of
heatmaps once (~0.1 ms) in the block-level arg-max pass.  float16 inputs halve the input bytes."""

NOTES = _NOTES_STATIC
_times = {}
_peaks = {}


def _timed(key, fn, peak=False):
    """``fn`` wrapped to record its durations (and peak RSS rise) for the ratios in NOTES."""

    def run():
        if _harness._PINNED:  # the harness's memory call (see _harness._malloc_mode)
            if not peak:
                return fn()
            with _harness.PeakMeter() as s:
                r = fn()
            _peaks.setdefault(key, []).append(s.peak / MiB)
            return r
        t0 = time.perf_counter()
        r = fn()
        _times.setdefault(key, []).append(time.perf_counter() - t0)
        return r

    return run


def _peak(key):
    """Largest RSS rise of the harness's steady-state memory calls."""
    p = _peaks.get(key, [])
    return max(p) if p else float("nan")


_cpu = {}


def _median(key, skip_first=False):
    t = _times.get(key, [])
    t = t[1:] if skip_first and len(t) > 1 else t
    return statistics.median(t) if t else float("nan")


def cases(quick, backend):
    global NOTES
    import numvox

    _times.clear()
    _peaks.clear()
    n = 96 if quick else 300
    shape = (n, n, n)
    L = 3
    out_mib = L * n**3 * 4 / MiB

    probs, offsets, _, _ = realistic_inputs(shape, L)
    frac = float((probs[..., 1:] >= 0.5).any(axis=-1).mean())
    small = 40 if quick else 70
    sp, so, _, _ = realistic_inputs((small,) * 3, L, seed=1)
    baselines = [
        Baseline("np.nonzero + np.bincount", _timed("sph_np", lambda: numpy_bincount(probs, offsets)), repeat=2),
        Baseline("probs.sum(); offsets.sum()", _timed("sph_floor", lambda: read_floor(probs, offsets)), repeat=3),
        Baseline(
            f"seed loops (at {small}^3, x({n}/{small})^3)", lambda: seed_loops(sp, so), repeat=1,
            scale=(n / small) ** 3, note="extrapolated",
        ),
    ]
    try:
        tf_run = make_tf_filter_scatter(shape, L)
        tf_run(probs, offsets)  # trace once
        baselines.append(Baseline("TF filter + scatter", lambda: tf_run(probs, offsets), repeat=2))
    except ImportError:  # pragma: no cover
        pass
    yield Case(
        f"aggregate_votes {n}^3 L=3 spheres ({frac:.0%} vote), nearest",
        numvox=_timed("sph", lambda: numvox.aggregate_votes(probs, offsets, backend=backend), peak=True),
        baselines=baselines,
        note=f"output {out_mib:.0f} MiB",
    )
    _cpu["sph"] = (
        cpu_seconds(lambda: numvox.aggregate_votes(probs, offsets, backend=backend), 3, threads=1),
        cpu_seconds(lambda: numpy_bincount(probs, offsets), 2, threads=1),
        cpu_seconds(lambda: read_floor(probs, offsets), 3, threads=1),
    )
    yield Case(
        f"aggregate_votes {n}^3 L=3 spheres, linear",
        numvox=_timed("sph_lin", lambda: numvox.aggregate_votes(probs, offsets, splat="linear", backend=backend),
                      peak=True),
        baselines=[Baseline("probs.sum(); offsets.sum()", lambda: read_floor(probs, offsets), repeat=3)],
    )
    heat = np.asarray(numvox.aggregate_votes(probs, offsets, splat="linear", backend=backend))
    yield Case(
        f"heatmap_peaks 3 x {n}^3",
        numvox=lambda: numvox.heatmap_peaks(heat, backend=backend),
        baselines=[Baseline("np.argmax + window centroid", lambda: numpy_peaks(heat), repeat=3)],
    )
    heat = None
    p16, o16 = probs.astype(np.float16), offsets.astype(np.float16)
    probs = offsets = None  # free the inputs (the timed closures are done with them)
    yield Case(
        f"aggregate_votes {n}^3 L=3 spheres, float16 inputs, nearest",
        numvox=_timed("f16", lambda: numvox.aggregate_votes(p16, o16, backend=backend), peak=True),
        baselines=[Baseline("np.nonzero + np.bincount (float16)", lambda: numpy_bincount(p16, o16), repeat=2)],
    )
    p16 = o16 = None

    probs, offsets = uniform_inputs(shape, L)
    frac_u = float((probs[..., 1:] >= 0.5).mean())
    yield Case(
        f"aggregate_votes {n}^3 L=3 uniform (seed data, {frac_u:.0%} of votes pass), nearest",
        numvox=_timed("uni", lambda: numvox.aggregate_votes(probs, offsets, backend=backend), peak=True),
        baselines=[
            Baseline("np.nonzero + np.bincount", _timed("uni_np", lambda: numpy_bincount(probs, offsets)), repeat=2),
            Baseline("probs.sum(); offsets.sum()", _timed("uni_floor", lambda: read_floor(probs, offsets)), repeat=3),
        ],
        note=f"output {out_mib:.0f} MiB",
    )
    _cpu["uni"] = (
        cpu_seconds(lambda: numvox.aggregate_votes(probs, offsets, backend=backend), 3, threads=1),
        cpu_seconds(lambda: numpy_bincount(probs, offsets), 2, threads=1),
        cpu_seconds(lambda: read_floor(probs, offsets), 3, threads=1),
    )
    probs = offsets = None  # free the inputs (the timed closures are done with them)

    lines = [
        "",
        "Ratios of this run (medians; numvox's first call, which compiles or loads the kernels, "
        "is excluded here, also from the peak memory; the table's peak column includes it):",
        "",
    ]
    for key, label in (("sph", "spheres, nearest"), ("uni", "uniform, nearest")):
        t = _median(key, skip_first=True)
        lines.append(
            f"- {label}: {_median(key + '_np') / t:.1f}x faster than np.nonzero + np.bincount "
            f"(target >= 10x); read-floor time / numvox time = {_median(key + '_floor') / t:.2f} "
            f"(target >= 1); peak extra {_peak(key):.0f} MiB = "
            f"{_peak(key) / out_mib:.2f}x the {out_mib:.0f} MiB output "
            f"(incl. the output's own touched pages; target <= 1x beyond the output)."
        )
    for key, label in (("sph_lin", "spheres, linear"), ("f16", "spheres, float16 inputs")):
        lines.append(
            f"- {label}: {_median(key, skip_first=True) * 1e3:.0f} ms, peak extra "
            f"{_peak(key):.0f} MiB."
        )
    import numba

    threads = numba.get_num_threads()
    lines += [
        "",
        "CPU time of one thread (process CPU seconds, numvox on 1 Numba thread; unlike wall "
        "time it does not grow when other processes share the cores, so it shows the work "
        f"each side does; 'ideal wall' divides numvox's by the {threads} threads):",
        "",
    ]
    for key, label in (("sph", "spheres, nearest"), ("uni", "uniform, nearest")):
        if key in _cpu:
            nv, npy, floor = _cpu[key]
            lines.append(
                f"- {label}: numvox {nv * 1e3:.0f} ms CPU on 1 thread (ideal wall on {threads} threads "
                f"{nv / threads * 1e3:.0f} ms), np.nonzero + np.bincount {npy * 1e3:.0f} ms "
                f"({npy / nv:.1f}x the CPU work; {npy / (nv / threads):.1f}x at ideal wall), "
                f"read floor {floor * 1e3:.0f} ms (floor / ideal numvox wall = {floor / (nv / threads):.2f})."
            )
    NOTES = _NOTES_STATIC + "\n" + "\n".join(lines)
