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
the median.  Each baseline runs ``repeat`` times (median).  Timed calls run alone: no
sampling thread, and glibc in the state of a warmed-up process (see ``_malloc_mode``).
Peak extra memory comes from one more steady-state call: the largest rise of the process's
resident set size over its level before the call, read from the kernel's peak-RSS mark
(``VmHWM``, reset before the call; a 1 ms ``/proc/self/statm`` sampler where it cannot be
reset), so it sees NumPy, Numba and TensorFlow allocations alike.  For that call glibc's
mmap threshold is pinned so that memory freed by earlier calls is not silently reused.
Where ``/proc`` is missing, the peak Python-tracked allocation is reported instead.
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


_LIBC = None
_PINNED = None


def _malloc_mode(measuring_memory):
    """Set glibc's mmap and trim thresholds for timing or for a memory measurement.

    By default glibc raises its mmap threshold (up to 32 MiB) after large blocks are freed,
    so a second call's big temporaries come from the already-resident heap: a long-running
    process's normal, fast state, but invisible to an RSS measurement.  For the sampled
    memory calls a fixed 1 MiB mmap (and trim) threshold keeps every large allocation a
    fresh mapping, so each call's peak shows up as RSS growth.  Timed calls run with the
    thresholds a warmed-up process settles at (glibc's own dynamic ones until the first
    memory call, then 32 MiB mmap and 64 MiB trim, where the dynamic ones end up): the pinned 1 MiB
    values would make every call page-fault its outputs and scratch again, which slowed
    multi-threaded kernels by up to a third and is not what a user's process does.
    Nothing is changed at import, so processes that merely import this module (Dask
    workers unpickling a benchmark's functions) keep glibc's defaults.
    """
    global _LIBC, _PINNED
    if _PINNED == measuring_memory or (_PINNED is None and not measuring_memory):
        return  # (never pinned: glibc's own dynamic thresholds are the timing state)
    try:
        import ctypes

        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        mmap, trim = (1 << 20, 1 << 20) if measuring_memory else (32 << 20, 64 << 20)
        _LIBC.mallopt(M_MMAP_THRESHOLD, mmap)
        _LIBC.mallopt(M_TRIM_THRESHOLD, trim)
        _PINNED = measuring_memory
    except (OSError, AttributeError):  # not glibc: measurements may under-report reuse
        _PINNED = measuring_memory



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


def _release_free_heap():
    """``malloc_trim(0)``: give the heap's free pages back to the OS, so that a call which
    reuses them (instead of mapping new memory) still shows up as RSS growth."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _clear_peak():
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS (Linux >= 4.0);
    False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMeter:
    """``peak``: the largest rise of the process's RSS during the ``with`` block, in bytes.

    Exact where the kernel's peak-RSS mark can be reset (``/proc/self/clear_refs``): the
    mark is reset on entry and read on exit, so no sampling thread runs (a sampler needs
    the GIL, which a Numba kernel holds for its whole call, so it would miss the peak).
    Elsewhere a thread samples ``/proc/self/statm`` every millisecond.
    """

    def __init__(self, interval=0.001):
        self.interval = interval
        self.peak = 0
        self._hwm = False

    def __enter__(self):
        gc.collect()
        _release_free_heap()
        self._hwm = _clear_peak()
        if self._hwm:
            self.base = _status_kib("VmRSS") * 1024
            return self
        self.base = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() - self.base)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self._hwm:
            self.peak = max(0, _status_kib("VmHWM") * 1024 - self.base)
            return
        self.peak = max(self.peak, _rss_bytes() - self.base)
        self._stop.set()
        self._thread.join()


def cpu_seconds(fn, repeat=5, threads=None):
    """Smallest process CPU time (all threads) of ``repeat`` calls of ``fn`` after a warm-up
    call: less sensitive than wall time to other jobs on a shared machine (threads waiting
    for a core cost no CPU time).  ``threads``: run with that many Numba threads (idle
    workers' spin-waiting then adds nothing), restored afterwards."""
    import numba

    before = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(threads)
    try:
        fn()
        best = float("inf")
        for _ in range(repeat):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
    finally:
        numba.set_num_threads(before)
    return best


def measure(fn, repeat, *, cold=True):
    """Time ``fn``: its first call (when ``cold``), then ``repeat`` calls; peak extra RSS.

    The timed calls run alone, with a warmed-up process's malloc settings; the peak comes
    from one extra steady-state call measured by :class:`PeakMeter` with pinned malloc
    thresholds (see :func:`_malloc_mode`).  Calls slower than ``_SLOW_S`` are not repeated
    for it: their timed calls after the first are measured in place, with the timing
    settings (which can only under-report those calls' memory; they are baselines).
    """
    have_proc = os.path.exists("/proc/self/statm")
    times, peak, sampled = [], 0.0, False
    first = None
    for i in range(repeat + (1 if cold else 0)):
        steady = not (cold and i == 0)
        inline = have_proc and steady and (times or [first or 0.0])[-1] > _SLOW_S
        if inline:
            with PeakMeter(interval=0.005) as sampler:
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
        _malloc_mode(True)
        peak = _sampled_peak(fn, have_proc)
    _malloc_mode(False)
    median = statistics.median(times) if times else first
    return Measurement(first if first is not None else median, median, len(times), peak)


def _sampled_peak(fn, have_proc):
    """Peak extra memory of one more (steady-state) call of ``fn``, in MiB."""
    if have_proc:
        with PeakMeter() as sampler:
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
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:  # pragma: no cover
        pass
    if "model name" in info:
        # "AMD EPYC" names several generations: family / model and the widest SIMD tell them apart
        flags = info.get("flags", "").split()
        extra = []
        if "cpu family" in info and "model" in info:
            extra.append(f"family {info['cpu family']} model {info['model']}")
        for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
            if flag in flags:
                extra.append(name)  # the widest only
                break
        cpu = info["model name"] + (f" ({', '.join(extra)})" if extra else "")
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
