"""The progress callback the library reports to; the CLI draws it with Rich, Python callers may ignore it."""

from __future__ import annotations

from collections.abc import Callable

# (task description, items done, items in total, short status text such as "loss 0.52")
ProgressFn = Callable[[str, int, int, str], None]


def no_progress(task: str, done: int, total: int, status: str = "") -> None:
    """The default: report nothing."""
