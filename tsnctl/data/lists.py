"""Readers for the two list formats of the reference, and for label files.

Frame list line: ``<frame_dir> <num_frames> <label>``; video list line: ``<path> <label>``, or
``<path> <label> <start_s> <end_s>`` for the part of the video between two times in seconds (trimmed on the
fly when training on videos, and by ``extract-frames``). Paths are relative to a data root (by default the
folder holding the list). Labels are 0-based. Every malformed line is reported with file and line number;
nothing is skipped silently.

Paths may contain spaces, so the numeric fields are read from the right: a video line whose last three
fields are an integer and two numbers is a time range (a path ending in such words cannot be listed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tsnctl.errors import UserError
from tsnctl.textfiles import read_utf8, write_atomic


@dataclass(frozen=True)
class Sample:
    """One clip of a list. ``num_frames`` is known for frame lists and None for video lists."""

    name: str  # the path as written in the list (used in reports and score files)
    path: Path  # name resolved against the data root
    label: int
    num_frames: int | None = None
    start_s: float | None = None  # video lists with a time range: the part [start_s, end_s) of the video
    end_s: float | None = None

    @property
    def window(self) -> tuple[float, float] | None:
        """The time range ``(start_s, end_s)`` in seconds, or None for the whole video."""
        return None if self.start_s is None or self.end_s is None else (self.start_s, self.end_s)


def read_list(list_file: str | Path, fmt: str, root: str | Path = "", num_classes: int | None = None) -> list[Sample]:
    """Parse a frame list (``fmt="frames"``) or a video list (``fmt="video"``)."""
    list_file = Path(list_file)
    base = Path(root) if str(root) else list_file.parent
    samples = [parse_line(line, fmt, base, f"{list_file}:{line_no}", num_classes)
               for line_no, line in list_lines(list_file)]
    if not samples:
        raise UserError(f"{list_file}: the list holds no clips")
    return samples


def list_lines(list_file: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` for every line that is neither blank nor a ``#`` comment."""
    return [(line_no, line) for line_no, line in enumerate(read_utf8(list_file, "list file").splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]


def parse_line(line: str, fmt: str, base: Path, where: str, num_classes: int | None) -> Sample:
    fields = line.split()
    # Paths may contain spaces, so the numeric fields are taken from the right.
    window = _time_range(fields, where) if fmt == "video" else None
    if window is not None:
        fields = fields[:-2]
    expected = 3 if fmt == "frames" else 2
    if len(fields) < expected:
        layout = "<frame_dir> <num_frames> <label>" if fmt == "frames" else "<path> <label>"
        raise UserError(f"{where}: expected '{layout}', got {line.strip()!r}")
    label = _parse_int(fields[-1], "label", where)
    if label < 0 or (num_classes is not None and label >= num_classes):
        limit = f" (model has {num_classes} classes)" if num_classes is not None else ""
        raise UserError(f"{where}: label {label} is out of range{limit}")
    num_frames = None
    if fmt == "frames":
        num_frames = _parse_int(fields[-2], "num_frames", where)
        if num_frames <= 0:
            raise UserError(f"{where}: num_frames must be positive, got {num_frames}")
    name = " ".join(fields[: len(fields) - expected + 1])
    start, end = window or (None, None)
    return Sample(name=name, path=base / name, label=label, num_frames=num_frames, start_s=start, end_s=end)


def _time_range(fields: list[str], where: str) -> tuple[float, float] | None:
    """``(start_s, end_s)`` when the line ends in ``<label> <start_s> <end_s>``, else None."""
    if len(fields) < 4 or not fields[-3].lstrip("-").isdigit():
        return None
    try:
        start, end = float(fields[-2]), float(fields[-1])
    except ValueError:
        return None
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise UserError(f"{where}: time range {fields[-2]} to {fields[-1]} s: expected 0 <= start_s < end_s")
    return start, end


def _parse_int(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{where}: {what} must be an integer, got {text!r}") from None


def read_labels(label_file: str | Path) -> list[str]:
    """Class names from a file of ``name`` or ``<id> name`` lines (the Kinetics-400 list uses the latter)."""
    label_file = Path(label_file)
    names = []
    for line_no, line in enumerate(read_utf8(label_file, "label file").splitlines(), start=1):
        if not line.strip():
            continue
        head, _, rest = line.strip().partition(" ")
        if rest and head.isdigit():
            if int(head) != len(names):
                raise UserError(f"{label_file}:{line_no}: expected id {len(names)}, got {head}")
            names.append(rest.strip())
        else:
            names.append(line.strip())
    return names


def write_frame_list(path: str | Path, rows: list[tuple[str, int, int]]) -> None:
    """Write ``<frame_dir> <num_frames> <label>`` lines (atomically: a killed run leaves the old list or none)."""
    write_atomic(path, "".join(f"{name} {n} {label}\n" for name, n, label in rows))
