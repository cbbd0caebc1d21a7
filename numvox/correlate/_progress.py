"""A progress bar for long correlations: tqdm when importable, else one stderr line.

Both are drawn as soon as they are created (before the first block, and so before any kernel
that block compiles), and tell the compile notice (:mod:`numvox._shared.compile`) that stderr
holds an unfinished line, so that a notice starts on a line of its own.
"""

import sys
import time

from numvox._shared.compile import mark_partial_line


class _Line:
    """A minimal stand-in for ``tqdm``: rewrites one stderr line at most 5 times a second."""

    def __init__(self, total, desc):
        self.total, self.desc, self.n = total, desc, 0
        self._last = 0.0
        self._t0 = time.perf_counter()
        self._draw(self._t0)

    def _draw(self, now):
        self._last = now
        pct = 100.0 * self.n / self.total if self.total else 100.0
        sys.stderr.write(f"\r{self.desc}: {pct:5.1f}% ({self.n}/{self.total}) {now - self._t0:.1f} s")
        sys.stderr.flush()
        mark_partial_line(True)

    def update(self, k=1):
        self.n += k
        now = time.perf_counter()
        if now - self._last >= 0.2 or self.n >= self.total:
            self._draw(now)

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()
        mark_partial_line(False)


class _Null:
    def update(self, k=1):
        pass

    def close(self):
        pass


def progress_bar(enabled, total, desc="correlate_batch", unit="pair"):
    """An object with ``update(k)`` and ``close()``; does nothing unless ``enabled``."""
    if not enabled:
        return _Null()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Line(total, desc)
    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
    bar.refresh()
    return bar
