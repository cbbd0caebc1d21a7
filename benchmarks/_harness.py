"""Benchmark harness: numvox and the baselines a user would otherwise use, side by side.

A benchmark module ``benchmarks/bench_<name>.py`` defines::

    SECTION = "Vote aggregation"          # heading in RESULTS.md
    NOTES = "...markdown..."              # optional: text under the table (costs on paper...)

    def cases(quick, backend):            # yields Case objects
        yield Case("aggregate_votes 300^3, L=3", numvox=lambda: ..., baselines=[
            Baseline("np.nonzero + np.bincount", lambda: ...),
        ])

Each case's numvox callable is run once cold (its first call: Numba compilation or cache
load is included and reported separately), then ``repeat`` more times; the table reports
the median.  Each baseline runs ``repeat`` times (median).  Peak extra memory (of a
steady-state call, made apart from the timed ones) is the largest rise of the process's
resident set size over its level before the call, sampled every millisecond from
``/proc/self/statm`` (so it sees NumPy, Numba and TensorFlow
allocations alike; glibc's mmap threshold is pinned so that freed memory is not silently
reused by the next call), and the peak Python-tracked allocation where ``/proc`` is missing.
"""

import dataclasses
import gc
import os
import statistics
import threading
import time
from typing import Any, Callable

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MiB = 1024.0**2
_SLOW_S = 1.0  # calls slower than this are not repeated just to sample their memory


def _fix_malloc_thresholds():
    """Make glibc return large freed blocks to the OS at once.

    By default glibc raises its mmap threshold after large blocks are freed, so a second
    call's big temporaries come from the already-resident heap and are invisible to an RSS
    measurement.  A fixed 1 MiB mmap threshold (and trim threshold) keeps every large
    allocation a fresh mapping, so each call's peak shows up as RSS growth.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc: measurements may under-report reuse
        pass


_fix_malloc_thresholds()


@dataclasses.dataclass
class Baseline:
    name: str
    fn: Callable[[], Any]
    repeat: int = 3
    scale: float = 1.0  # multiply the measured time (extrapolation from a smaller problem)
    note: str = ""


@dataclasses.dataclass
class Case:
    name: str
    numvox: Callable[[], Any]
    baselines: list = dataclasses.field(default_factory=list)
    repeat: int = 5
    note: str = ""


@dataclasses.dataclass
class Measurement:
    first_s: float
    median_s: float
    runs: int
    peak_mib: float


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class _PeakSampler:
    """Samples RSS in a thread; ``peak`` is the largest rise above the starting level."""

    def __init__(self, interval=0.001):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        gc.collect()
        self.base = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() - self.base)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.peak = max(self.peak, _rss_bytes() - self.base)
        self._stop.set()
        self._thread.join()


def measure(fn, repeat, *, cold=True):
    """Time ``fn``: its first call (when ``cold``), then ``repeat`` calls; peak extra RSS.

    The timed calls run without the RSS sampler (a thread polling ``/proc`` every
    millisecond takes a few percent of a core, which a 2-core machine's parallel kernels
    feel); the peak comes from one extra steady-state call made with the sampler.  Calls
    slower than ``_SLOW_S`` are not repeated for it: their timed calls after the first are
    sampled in-line every 5 ms instead (overhead well below 1 %).
    """
    have_proc = os.path.exists("/proc/self/statm")
    times, peak, sampled = [], 0.0, False
    first = None
    for i in range(repeat + (1 if cold else 0)):
        steady = not (cold and i == 0)
        inline = have_proc and steady and (times or [first or 0.0])[-1] > _SLOW_S
        if inline:
            with _PeakSampler(interval=0.005) as sampler:
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
            peak = max(peak, sampler.peak / MiB)
            sampled = True
        else:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        if steady:
            times.append(dt)
        else:
            first = dt
    if not sampled:
        peak = _sampled_peak(fn, have_proc)
    median = statistics.median(times) if times else first
    return Measurement(first if first is not None else median, median, len(times), peak)


def _sampled_peak(fn, have_proc):
    """Peak extra memory of one more (steady-state) call of ``fn``, in MiB."""
    if have_proc:
        with _PeakSampler() as sampler:
            fn()
        return sampler.peak / MiB
    import tracemalloc  # pragma: no cover

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MiB
    finally:
        tracemalloc.stop()


def run_case(case, log=print):
    """Run one case; return table rows (one per baseline, or one if there are none)."""
    log(f"  {case.name}: numvox ...")
    nv = measure(case.numvox, case.repeat, cold=True)
    log(f"    numvox first {nv.first_s:.4g} s, median {nv.median_s:.4g} s, peak +{nv.peak_mib:.1f} MiB")
    rows = []
    for b in case.baselines or [None]:
        row = {
            "benchmark": case.name,
            "numvox_first_s": nv.first_s,
            "numvox_s": nv.median_s,
            "numvox_peak_mib": nv.peak_mib,
            "baseline": "",
            "baseline_s": None,
            "speedup": None,
            "baseline_peak_mib": None,
            "note": case.note,
        }
        if b is not None:
            log(f"  {case.name}: {b.name} ...")
            m = measure(b.fn, b.repeat, cold=False)
            t = m.median_s * b.scale
            row.update(
                baseline=b.name,
                baseline_s=t,
                speedup=t / nv.median_s if nv.median_s > 0 else float("inf"),
                baseline_peak_mib=m.peak_mib,
                note="; ".join(x for x in (case.note, b.note) if x),
            )
            log(f"    {b.name}: {t:.4g} s -> numvox is {row['speedup']:.3g}x")
        rows.append(row)
    return rows


def _fmt_s(x):
    if x is None:
        return ""
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def _fmt(x, spec):
    return "" if x is None else format(x, spec)


def markdown_table(rows):
    head = (
        "| benchmark | numvox first call | numvox (median) | baseline | baseline time | "
        "speed-up | numvox peak extra | baseline peak extra | note |\n"
        "|---|---:|---:|---|---:|---:|---:|---:|---|\n"
    )
    body = "".join(
        f"| {r['benchmark']} | {_fmt_s(r['numvox_first_s'])} | {_fmt_s(r['numvox_s'])} | "
        f"{r['baseline']} | {_fmt_s(r['baseline_s'])} | "
        f"{_fmt(r['speedup'], '.3g') + '×' if r['speedup'] is not None else ''} | "
        f"{_fmt(r['numvox_peak_mib'], '.1f')} MiB | "
        f"{_fmt(r['baseline_peak_mib'], '.1f') + ' MiB' if r['baseline_peak_mib'] is not None else ''} | "
        f"{r['note']} |\n"
        for r in rows
    )
    return head + body


def machine_description():
    import platform

    import numba
    import numpy
    import scipy

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024**2:.0f} GiB RAM"
    except OSError:  # pragma: no cover
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem}; Python {platform.python_version()}, "
        f"NumPy {numpy.__version__}, SciPy {scipy.__version__}, Numba {numba.__version__} "
        f"({numba.get_num_threads()} threads)"
    )
