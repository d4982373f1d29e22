"""Validate a frame or video list before training: every line, every clip, the class balance.

Finds what would otherwise surface hours into a run: malformed lines, labels out of range, duplicate
entries, missing files or frames, unreadable or truncated media and clips shorter than the segments
they are cut into. Each problem is one CSV row naming the list line and the file.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tsnctl.data.decode import count_folder_frames, read_frame_folder, read_video
from tsnctl.data.lists import Sample, list_lines, parse_line
from tsnctl.data.sampling import eval_indices
from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress
from tsnctl.textfiles import write_atomic


@dataclass
class CheckRow:
    line: int
    path: str  # as written in the list
    label: int | None
    frames: int | None  # frames found (None when the clip could not be read)
    status: str  # ok | bad_line | duplicate | missing | unreadable | too_short
    reason: str = ""


@dataclass
class CheckReport:
    list_file: Path
    rows: list[CheckRow]
    num_classes: int
    class_counts: Counter = field(default_factory=Counter)  # label -> readable clips

    @property
    def problems(self) -> list[CheckRow]:
        return [row for row in self.rows if row.status != "ok"]

    @property
    def empty_classes(self) -> list[int]:
        return [c for c in range(self.num_classes) if self.class_counts[c] == 0]

    def write_csv(self, path: str | Path) -> None:
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(["line", "path", "label", "frames", "status", "reason"])
        for row in self.rows:
            writer.writerow([row.line, row.path, "" if row.label is None else row.label,
                             "" if row.frames is None else row.frames, row.status, row.reason])
        write_atomic(path, text.getvalue())


def check_list(list_file: str | Path, fmt: str, root: str | Path = "", num_classes: int = 400,
               image_template: str = "img_{:05d}.jpg", min_frames: int = 1, num_seg: int = 3, workers: int = 1,
               progress: ProgressFn = no_progress) -> CheckReport:
    """Check every line of ``list_file``; clips are opened and their ``num_seg`` centre frames decoded."""
    list_file = Path(list_file)
    base = Path(root) if str(root) else list_file.parent
    rows: list[CheckRow] = []
    to_read: list[tuple[CheckRow, Sample]] = []
    first_line: dict[str, int] = {}
    lines = list_lines(list_file)
    if not lines:
        raise UserError(f"{list_file}: the list holds no clips (only blank or comment lines)")
    for line_no, line in lines:
        try:
            sample = parse_line(line, fmt, base, f"{list_file}:{line_no}", num_classes)
        except UserError as exc:
            rows.append(CheckRow(line_no, line.strip(), None, None, "bad_line", str(exc)))
            continue
        row = CheckRow(line_no, sample.name, sample.label, None, "ok")
        rows.append(row)
        # ./a.mp4, sub/../a.mp4 and ROOT/a.mp4 are one clip: compare the normalised path, not the spelling
        key = os.path.normpath(sample.path)
        if key in first_line:
            row.status, row.reason = "duplicate", f"{list_file}:{line_no}: {sample.name} repeats line " \
                                                  f"{first_line[key]}"
            continue
        first_line[key] = line_no
        to_read.append((row, sample))

    def check_one(item: tuple[CheckRow, Sample]) -> CheckRow:
        row, sample = item
        _check_clip(row, sample, fmt, image_template, min_frames, num_seg)
        return row

    problems = len(rows) - len(to_read)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # OpenCV decodes without the GIL
        for done, checked in enumerate(pool.map(check_one, to_read), start=1):
            problems += checked.status != "ok"
            progress("check", done, len(to_read), f"{problems} problem(s)")
    counts = Counter(row.label for row in rows if row.status == "ok")
    return CheckReport(list_file, rows, num_classes, counts)


def _check_clip(row: CheckRow, sample: Sample, fmt: str, template: str, min_frames: int, num_seg: int) -> None:
    """Fill ``row.frames`` and, when something is wrong, ``row.status`` and ``row.reason``."""
    try:
        if fmt == "frames":
            row.frames = _check_frame_folder(sample, template, num_seg)
        else:
            counted: list[int] = []

            def indices(n: int) -> list[int]:
                counted.append(n)
                return eval_indices(n, num_seg)

            read_video(sample.path, indices, sample.window)
            row.frames = counted[-1]
    except UserError as exc:
        missing = "not found" in str(exc)
        row.status, row.reason = ("missing" if missing else "unreadable"), str(exc)
        return
    if row.frames < min_frames:
        row.status = "too_short"
        row.reason = f"{sample.path}: {row.frames} frame(s), fewer than {min_frames}"


def _check_frame_folder(sample: Sample, template: str, num_seg: int) -> int:
    """Every listed frame must exist; the centre frames of ``num_seg`` segments must decode."""
    found = count_folder_frames(sample.path, template)
    listed = sample.num_frames or found
    absent = [template.format(i) for i in range(1, listed + 1) if not (sample.path / template.format(i)).is_file()]
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise UserError(f"{sample.path / absent[0]}: frame file not found{more} (the list says {listed} frames)")
    read_frame_folder(sample.path, sorted({0, listed - 1, *eval_indices(listed, num_seg)}), template)
    return listed
