"""A progress bar for long correlations: tqdm when importable, else one stderr line."""

import sys
import time


class _Line:
    """A minimal stand-in for ``tqdm``: rewrites one stderr line at most 5 times a second."""

    def __init__(self, total, desc):
        self.total, self.desc, self.n = total, desc, 0
        self._last = 0.0
        self._t0 = time.perf_counter()

    def update(self, k=1):
        self.n += k
        now = time.perf_counter()
        if now - self._last >= 0.2 or self.n >= self.total:
            self._last = now
            pct = 100.0 * self.n / self.total if self.total else 100.0
            sys.stderr.write(f"\r{self.desc}: {pct:5.1f}% ({self.n}/{self.total}) {now - self._t0:.1f} s")
            sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


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
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
