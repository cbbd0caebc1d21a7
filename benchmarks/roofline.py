"""Roofline of numvox's CPU kernels: the machine's measured limits, and for each kernel at its
benchmark size the bytes it must move, the flops it does, its time and the fraction of the
limit that binds it.  ``python -m benchmarks roofline [--quick]`` writes the section.

Limits, measured here with Numba loops (the best of several calls); kernel times are medians:

- stream bandwidth, one and two threads: a copy (``b[i] = a[i]``, counted as 2 x the array:
  read + write; write-allocate traffic, when the stores are not streaming, is not counted)
  and a sum (read only), over arrays far larger than the last-level cache;
- float32 FMA peak, one and two threads: 128 independent ``x = x * a + b`` chains (eight
  512-bit or sixteen 256-bit registers, enough to cover the FMA latency), 2 flops per FMA.

Per kernel, "bytes" is the compulsory traffic (inputs read once, outputs written once; for the
FFT path, the spectra streamed per task as well), "flops" counts every arithmetic lane
operation (compares and selects too, each as one flop, against the FMA peak that counts 2 per
FMA, so a kernel of plain operations can reach at most half of the compute roof).  The binding
resource is the one whose roof the kernel is closest to.
"""

import math
import statistics
import time

import numpy as np

SECTION = "Roofline: CPU kernels against the machine's limits"


# -- machine limits --------------------------------------------------------------------------


def _kernels():
    from numba import njit, prange

    @njit(parallel=True, fastmath=True, cache=True)
    def copy(a, b):
        for i in prange(a.shape[0]):
            b[i] = a[i]

    @njit(parallel=True, fastmath=True, cache=True)
    def total(a):
        s = np.float32(0)
        for i in prange(a.shape[0]):
            s += a[i]
        return s

    @njit(parallel=True, fastmath=True, cache=True)
    def fma(n, a, b, parts):
        out = np.zeros(parts, dtype=np.float32)
        for p in prange(parts):
            x = np.empty(128, dtype=np.float32)
            for j in range(128):
                x[j] = j * np.float32(1e-3) + p
            for _ in range(n):
                for j in range(128):
                    x[j] = x[j] * a + b
            out[p] = x.sum()
        return out

    return copy, total, fma


def _times(fn, repeat):
    """Wall times of ``repeat`` calls of ``fn`` after a warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def machine_limits(quick):
    """``{"copy": {1: GB/s, 2: GB/s}, "sum": {...}, "fma": {1: GFLOP/s, 2: ...}}``: the best of
    several calls each (other jobs on the machine can only slow a call down, so the fastest
    call is the closest to what the hardware allows)."""
    import numba

    copy, total, fma = _kernels()
    n = (8 if quick else 64) * 2**20  # float32 values: 32 MiB quick, 256 MiB (8x the L3 here)
    a = np.ones(n, dtype=np.float32)
    b = np.empty_like(a)
    iters = 2_000_000 if quick else 40_000_000  # ~5 / ~60 ms per thread at ~180 GFLOP/s
    before = numba.get_num_threads()
    limits = {"copy": {}, "sum": {}, "fma": {}}
    repeat = 3 if quick else 7
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            limits["copy"][threads] = 2 * a.nbytes / min(_times(lambda: copy(a, b), repeat)) / 1e9
            limits["sum"][threads] = a.nbytes / min(_times(lambda: total(a), repeat)) / 1e9
            flops = 2 * 128 * iters * threads
            limits["fma"][threads] = flops / min(_times(
                lambda t=threads: fma(iters, np.float32(0.999), np.float32(1e-3), t), repeat)) / 1e9
    finally:
        numba.set_num_threads(before)
    return limits


# -- kernels at their benchmark sizes ---------------------------------------------------------


class Row:
    def __init__(self, name, fn, nbytes, flops, hint, repeat=5):
        self.name, self.fn, self.nbytes, self.flops, self.hint, self.repeat = name, fn, nbytes, flops, hint, repeat


def _votes_rows(quick):
    import numvox

    from .baselines_votes import realistic_inputs

    n, L = (48 if quick else 300), 3
    probs, offsets, _, _ = realistic_inputs((n, n, n), L)
    frac = float((probs[..., 1:] >= 0.5).mean())
    nbytes = probs.nbytes + offsets.nbytes + L * n**3 * 4
    # per voxel and landmark: one threshold compare; per vote: 3 adds, 3 roundings, 3 bound checks, 1 add
    flops = n**3 * L * (1 + frac * 10)
    yield Row(f"aggregate_votes {n}^3, L={L}, nearest ({frac:.0%} of voxel-landmarks vote)",
              lambda: numvox.aggregate_votes(probs, offsets), nbytes, flops,
              f"reads 52 B per voxel once; the votes' scattered adds into the {L * n**3 * 4 / 2**20:.0f} MiB "
              "output miss the cache; next: narrower inputs (float16 probs/offsets halve the bytes)")


def _labels_rows(quick):
    import numvox

    n = 64 if quick else 256
    v = np.random.default_rng(0).random((n, n, n), dtype=np.float32)
    out = np.ones(v.shape, np.uint8)
    # separable class minima: 9 compare-selects (2 lane ops each) per voxel, plus the label write
    yield Row(f"descent_labels {n}^3 float32 (out= uint8)", lambda: numvox.descent_labels(v, out=out),
              v.nbytes + out.nbytes, 19 * n**3,
              "latency and issue width rather than a roof: flat whole-plane passes, next input "
              "plane prefetched; of ~21 ms on one thread the per-voxel label pass is ~10.5, the "
              "plane fill (with the finite check) ~5.6, the in-plane minima ~3.8; next: fold the "
              "finite check into the fill, a two-plane ring for the in-plane minima", repeat=9)


def _correlate_rows(quick):
    import numvox
    from numvox.correlate import _fft, _fft_engines, _rules

    rng = np.random.default_rng(0)
    NV, KF, D = (4, 8, 32) if quick else (16, 32, 64)
    vols = rng.random((NV, D, D, D, 1), dtype=np.float32)
    filts = rng.random((KF, 3, 3, 3, 1), dtype=np.float32)
    yield Row(f"correlate_batch direct: {NV} x {KF} of {D}^3, 3^3 filters, float32",
              lambda: numvox.correlate_batch(vols, filts, channel_axis=-1, mode="same"),
              vols.nbytes + filts.nbytes + NV * KF * D**3 * 4, 2 * NV * KF * D**3 * 27,
              f"writes its (N, K, {D}^3) maps ({NV * KF * D**3 * 4 / 2**20:.0f} MiB, fresh pages: the "
              "page faults cost more than the bytes); next: reduce='max' or out= removes most of "
              "the traffic, then the FMA loop binds")
    N, K = (8, 10) if quick else (40, 50)
    images = rng.random((N, 96, 96, 3), dtype=np.float32)
    filters = rng.random((K, 96, 96, 3), dtype=np.float32)
    geom = _rules.geometry(images.shape, filters.shape, "same", None)
    flops, nbytes = _fft.path_costs(geom, 8)
    engine = _fft_engines.engine_name()
    yield Row(f"correlate_batch FFT: seed problem {N} x {K} of (96, 96, 3), reduce='max', float32 "
              f"({engine} engine)",
              lambda: numvox.correlate_batch(images, filters, reduce="max", method="fft"), nbytes, flops,
              "compute: pruned 144^2 inverse transforms (three per pair) at the FFT library's "
              "speed, in cache; next: batched 2-D transforms over several pairs with wider "
              "vector codelets, or fewer inverse transforms (reduce before transforming is "
              "impossible for max)")


def _pac_rows(quick):
    import numvox

    from .bench_pac import _2D, _3D, _data

    configs = [("2-D", _2D), ("3-D", _3D)]
    if quick:
        configs = [("2-D", dict(_2D, N=1, S=(48, 48))), ("3-D", dict(_3D, S=(20, 20, 20)))]
    for label, cfg in configs:
        x, f, w, b, go = _data(cfg)
        V = cfg["N"] * math.prod(cfg["S"])
        taps = math.prod(cfg["k"])
        C, O, F = cfg["C"], cfg["O"], cfg["F"]
        gemm = 2 * V * taps * C * O
        adapt = V * taps * (3 * F + 12 + 2 * O)  # distances, exp, the K-weighted sum of the products
        size = "x".join(map(str, cfg["S"]))
        name = f"pac_conv {label} N={cfg['N']} {size} C={C}->O={O}, k={'x'.join(map(str, cfg['k']))}, F={F}"
        fwd_bytes = x.nbytes + f.nbytes + go.nbytes + w.nbytes
        share = adapt / (gemm + adapt)
        yield Row(f"{name}, forward", lambda x=x, f=f, w=w, b=b: numvox.pac_conv(x, f, w, b),
                  fwd_bytes, gemm + adapt,
                  f"compute: per window row one GEMM (k O x C by C x rows*W) then the K-weighted sum "
                  f"of shifted product rows; the adaptation is {share:.0%} of the flops.  The GEMMs "
                  f"alone (the plain convolution's multiply-adds) take ~2x TF's oneDNN conv on one "
                  f"thread (2-D: 5.0 vs 2.4 ms): OpenBLAS runs its AVX2 (Haswell) kernels on this "
                  f"CPU, forcing its SkylakeX kernels measured the same, and C = 8-16 is a short inner "
                  f"dimension; next: an AVX-512 micro-kernel for the k O x C products, guide rows and "
                  f"kernels shared between the output rows of a group")
        bwd_bytes = 2 * (x.nbytes + f.nbytes + w.nbytes) + go.nbytes
        yield Row(f"{name}, backward", lambda go=go, x=x, f=f, w=w: numvox.pac_conv_backward(go, x, f, w),
                  bwd_bytes, 2 * gemm + 3 * adapt,
                  "compute: two GEMMs per block plus the guide gradient; next: as the forward, and "
                  "fewer passes over the window kernels")


def _measure(rows, log):
    out = []
    for row in rows:
        log(f"  {row.name} ...")
        out.append((row, statistics.median(_times(row.fn, row.repeat))))
    return out


def _fmt_rate(x, unit):
    return f"{x:.3g} {unit}"


def section(quick=False, backend="cpu", log=print):
    """The roofline section's markdown (measures the limits, then every kernel)."""
    import datetime

    from ._harness import machine_description

    log("  machine limits ...")
    lim = machine_limits(quick)
    threads = max(lim["fma"])
    # the best figure over thread counts: on a shared machine a 2-thread run can measure less
    # than one thread (the other core busy), and the hardware allows at least the best seen
    bw = max(max(lim["copy"].values()), max(lim["sum"].values()))
    peak = max(lim["fma"].values())
    rows = []
    for make in (_votes_rows, _labels_rows, _correlate_rows, _pac_rows):
        rows.extend(make(quick))
    measured = _measure(rows, log)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {SECTION}",
        "",
        f"Machine: {machine_description()}. Run: {when}{' (quick sizes)' if quick else ''}. "
        f"CPU kernels only{'' if backend == 'cpu' else ' (the --backend option does not apply)'}; "
        "times are medians of 5-9 calls on a machine shared with other jobs.",
        "",
        "| limit | 1 thread | " + " | ".join(f"{t} threads" for t in sorted(lim["fma"]) if t > 1) + " |",
        "|---|---:|" + "---:|" * (len(lim["fma"]) - 1),
    ]
    for key, label, unit in (("copy", "stream copy (read + write)", "GB/s"), ("sum", "stream sum (read)", "GB/s"),
                             ("fma", "float32 FMA peak (Numba loop)", "GFLOP/s")):
        lines.append(f"| {label} | " + " | ".join(_fmt_rate(lim[key][t], unit) for t in sorted(lim[key])) + " |")
    lines += [
        "",
        f"Roofs used below (kernels run on {threads} threads; each roof is the best figure above, "
        "since a two-thread figure below the one-thread one means the other core was busy): "
        f"memory {bw:.3g} GB/s, compute {peak:.3g} GFLOP/s (ridge at {peak / bw:.3g} flop/byte).",
        "",
        "| kernel | bytes | flops | flop/byte | time | GB/s | GFLOP/s | % of memory roof | "
        "% of compute roof | binds | next step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row, t in measured:
        gbs, gfs = row.nbytes / t / 1e9, row.flops / t / 1e9
        fm, fc = gbs / bw, gfs / peak
        binds = "memory" if fm >= fc else "compute"
        binds = f"{binds} ({100 * max(fm, fc):.0f}% of it)" if max(fm, fc) >= 0.25 else \
            f"neither (closest: {binds}, {100 * max(fm, fc):.0f}%)"
        lines.append(
            f"| {row.name} | {row.nbytes / 2**20:.4g} MiB | {row.flops / 1e9:.3g} G | {row.flops / row.nbytes:.3g} | "
            f"{t * 1e3:.3g} ms | {gbs:.3g} | {gfs:.3g} | {100 * fm:.0f}% | {100 * fc:.0f}% | "
            f"{binds} | {row.hint} |"
        )
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


NOTES = (
    "How to read it: a kernel at a high percentage of its binding roof can only get faster by "
    "doing less of that resource (fewer bytes, fewer flops); a kernel low on both roofs is bound "
    "by latency, dependencies, synchronisation or page faults, and the next step says which. "
    "Bytes are compulsory traffic, so real traffic is higher (write-allocate, re-reads of halos "
    "and spectra that fall out of cache); flops are counted from the algorithm, not from "
    "hardware counters."
)
