"""Numba's compilation of numvox's kernels: where the cache lives, a notice when a kernel is
about to compile, and filling the cache ahead of time in parallel processes.

Every CPU kernel is compiled on its first call for each combination of argument types and
stored on disk (``cache=True``), so the cost is paid once per installation, dtype and kernel.
Numba picks the cache folder (:func:`cache_location`): ``NUMBA_CACHE_DIR`` when it is set,
else ``__pycache__`` beside each source file when the installation is writable, else a
per-user folder (``~/.cache/numba``).  For a read-only installation shared by users, or a
Docker image or cluster whose workers should start warm, set ``NUMBA_CACHE_DIR`` to a
writable (or pre-filled) folder and run ``numvox compile`` there once.

Compile notice (:func:`install_notice`): when one of numvox's kernels is about to be compiled
(it has no compiled or cached version for the argument types), one line on stderr names it
and says roughly how long compilation takes.  It is shown when ``NUMVOX_COMPILE_NOTICE=1``,
never when it is ``0``, and otherwise only when stderr is a terminal (an interactive
session, a command typed in a shell) or in the ``numvox`` command line; library use in
scripts, tests and workers with redirected stderr stays silent.
"""

import contextlib
import os
import sys
import threading
import time

NOTICE_ENV = "NUMVOX_COMPILE_NOTICE"
BURST_GAP_S = 2.0

#: rough cold-cache compile time of one operation family's kernels for one dtype, in seconds,
#: the CPU time of the slowest first call of the family in benchmarks/bench_compile.py (2-core
#: x86-64); shown in the notice
TYPICAL_SECONDS = {"votes": 15, "labels": 20, "correlate": 12, "pac": 40}


def cache_location():
    """Where Numba stores numvox's compiled kernels, as a printable path.

    Returns
    -------
    str
        ``NUMBA_CACHE_DIR`` when set; ``<package>/*/__pycache__`` when Numba caches beside the
        sources; else the per-user cache folder Numba falls back to.
    """
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return os.path.abspath(env)
    from ._probe import _sum  # any cache=True kernel of the package tells where Numba caches

    path = _sum._cache._cache_path
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.abspath(path).startswith(package + os.sep):
        return os.path.join(package, "*", "__pycache__")
    return os.path.dirname(os.path.dirname(path))


def check_cache_writable():
    """Raise ``PermissionError`` naming ``NUMBA_CACHE_DIR`` when the cache cannot be written."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        try:
            os.makedirs(env, exist_ok=True)
        except OSError as exc:
            raise PermissionError(f"NUMBA_CACHE_DIR={env!r} cannot be created: {exc}") from None
        if not os.access(env, os.W_OK):
            raise PermissionError(f"NUMBA_CACHE_DIR={env!r} is not writable; point it at a writable folder")
        return
    try:
        cache_location()
    except RuntimeError as exc:  # Numba found no writable cache folder for the package
        raise PermissionError(f"no writable Numba cache ({exc}); set NUMBA_CACHE_DIR to a writable folder") from None


# -- the compile notice ------------------------------------------------------------------
class _Notice:
    """A Numba ``numba:compile`` listener printing one line when numvox kernels start
    compiling: for the outermost compilation only (kernels it calls compile inside it), and
    once per burst (a family's kernels compiled one after another for one call, less than
    :data:`BURST_GAP_S` apart, share the line)."""

    def __init__(self):
        from numba.core import event

        class Listener(event.Listener):
            def on_start(inner, ev):
                self.start(ev.data)

            def on_end(inner, ev):
                self.end(ev.data)

        self.depth = threading.local()
        self.last_end = {}
        self.partial_line = False
        self.listener = Listener()

    @staticmethod
    def _family(data):
        module = getattr(getattr(data.get("dispatcher"), "py_func", None), "__module__", "") or ""
        return module.split(".")[1] if module.startswith("numvox.") and module.count(".") >= 2 else None

    def start(self, data):
        depth = getattr(self.depth, "n", 0)
        self.depth.n = depth + 1
        family = self._family(data)
        if depth or family is None or not notice_enabled():
            return
        if time.monotonic() - self.last_end.get(family, -1e9) < BURST_GAP_S:
            return
        typical = TYPICAL_SECONDS.get(family)
        about = f"up to about {typical} s" if typical else "seconds to a minute"
        lead = "\n" if self.partial_line else ""
        sys.stderr.write(
            f"{lead}numvox: compiling {family} kernels for these argument types ({about} on first use, "
            "then cached on disk; `numvox compile` does this ahead of time)\n"
        )
        sys.stderr.flush()

    def end(self, data):
        self.depth.n = max(0, getattr(self.depth, "n", 1) - 1)
        family = self._family(data)
        if family is not None:
            self.last_end[family] = time.monotonic()


_NOTICE = []
_FORCED = []


def notice_enabled():
    """Whether the compile notice prints (see the module docstring for the rule)."""
    value = os.environ.get(NOTICE_ENV, "").strip()
    if value in ("0", "1"):
        return value == "1"
    if _FORCED:
        return _FORCED[-1]
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def install_notice():
    """Register the compile notice with Numba (once per process; cheap; imports Numba)."""
    if _NOTICE:
        return _NOTICE[0]
    from numba.core import event

    notice = _Notice()
    event.register("numba:compile", notice.listener)
    _NOTICE.append(notice)
    return notice


@contextlib.contextmanager
def notice_forced(show):
    """Within the block, show the compile notice (``show`` True: the command line) or never
    (False), whatever stderr is; ``NUMVOX_COMPILE_NOTICE`` still decides when it is set."""
    install_notice()
    _FORCED.append(bool(show))
    try:
        yield
    finally:
        _FORCED.pop()


def mark_partial_line(flag):
    """Tell the notice that stderr holds an unfinished progress line (so it starts a new one)."""
    if _NOTICE:
        _NOTICE[0].partial_line = bool(flag)


# -- filling the cache ahead of time ---------------------------------------------------------
def _init_worker():
    os.environ[NOTICE_ENV] = "0"


def _timed(function, task):
    t0 = time.perf_counter()
    function(*task)
    return time.perf_counter() - t0


def default_jobs():
    """The CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def run_warmups(function, tasks, *, jobs=None, progress=True, stream=None):
    """Run ``function(*task)`` for every task in ``jobs`` fresh worker processes.

    Parameters
    ----------
    function : callable
        A module-level function (pickled by reference into the workers), e.g.
        ``numvox.warmup.warm(op, dtype)``.
    tasks : list of tuple
        Arguments of each call; run longest-first in the order given.
    jobs : int, optional
        Worker processes (default: the usable CPU cores).
    progress : bool
        Show a progress line on ``stream`` (rewritten in place on a terminal, one line per
        finished task otherwise).

    Returns
    -------
    list of (task, seconds)
        In completion order.

    Raises
    ------
    RuntimeError
        Naming the first task that failed and its error.
    """
    import concurrent.futures as cf
    import multiprocessing

    stream = stream or sys.stderr
    jobs = max(1, min(jobs or default_jobs(), len(tasks) or 1))
    bar = _Bar(len(tasks), stream) if progress else None
    done = []
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked Numba threads
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker) as pool:
        futures = {pool.submit(_timed, function, task): task for task in tasks}
        for fut in cf.as_completed(futures):
            task = futures[fut]
            try:
                seconds = fut.result()
            except Exception as exc:
                for other in futures:
                    other.cancel()
                if bar:
                    bar.close()
                raise RuntimeError(f"compiling {' '.join(map(str, task))} failed: {exc}") from exc
            done.append((task, seconds))
            if bar:
                bar.update(task, seconds)
    if bar:
        bar.close()
    return done


class _Bar:
    """``[####----] 3/7  pac_conv float32 24.1 s  (elapsed 40 s)`` on one stderr line."""

    def __init__(self, total, stream):
        self.total, self.stream, self.n = total, stream, 0
        self.t0 = time.perf_counter()
        self.tty = bool(getattr(stream, "isatty", None) and stream.isatty())
        self._draw("compiling ...")

    def _draw(self, last):
        width = 20
        filled = width * self.n // max(1, self.total)
        line = (f"numvox compile [{'#' * filled}{'-' * (width - filled)}] {self.n}/{self.total}  {last}  "
                f"(elapsed {time.perf_counter() - self.t0:.0f} s)")
        self.stream.write(("\r\033[K" + line) if self.tty else line + "\n")
        sys.stderr.flush()

    def update(self, task, seconds):
        self.n += 1
        self._draw(f"{' '.join(map(str, task))} {seconds:.1f} s")

    def close(self):
        if self.tty:
            self.stream.write("\n")
            sys.stderr.flush()
