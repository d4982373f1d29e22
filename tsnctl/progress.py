"""The progress callback the library reports to; the CLI draws it with Rich, Python callers may ignore it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# (task description, items done, items in total, short status text such as "loss 0.52")
ProgressFn = Callable[[str, int, int, str], None]

log = logging.getLogger("tsnctl")


def no_progress(task: str, done: int, total: int, status: str = "") -> None:
    """The default: report nothing."""


@dataclass
class LogProgress:
    """A ProgressFn for logs and pipes (no terminal): one plain log line per task every ``every`` seconds
    and when the task completes, with rate and ETA, instead of a redrawn bar."""

    every: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _started: dict[str, tuple[float, int]] = field(default_factory=dict)
    _last_line: dict[str, float] = field(default_factory=dict)

    def __call__(self, task: str, done: int, total: int, status: str = "") -> None:
        now = self.clock()
        if task not in self._started or done < self._started[task][1]:
            self._started[task] = (now, done)  # a task name reused for a new pass starts over
            self._last_line[task] = now
        finished = done >= total
        if not finished and now - self._last_line[task] < self.every:
            return
        self._last_line[task] = now
        start, first = self._started[task]
        elapsed = now - start
        rate = (done - first) / elapsed if elapsed > 0 else 0.0
        timing = f"done in {_clock(elapsed)}, {rate:.2f} it/s" if finished else (
            f"{rate:.2f} it/s, eta {_clock((total - done) / rate)}" if rate > 0 else "eta ?")
        log.info("%s: %d/%d (%.0f%%) %s%s", task, done, total, 100.0 * done / max(total, 1), timing,
                 f" | {status}" if status else "")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
