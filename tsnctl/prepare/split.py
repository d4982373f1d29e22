"""Stratified train/val lists from a folder tree ``DATA_DIR/<class>/<clip>`` (``tsnctl split``).

* Classes are the sub-folders of DATA_DIR, sorted by name; their ids are the line numbers of ``labels.txt``.
* Clips are video files (``VIDEO_EXTENSIONS``), written as video lists ``<path> <label>``, or frame folders
  (``img_00001.jpg`` ...), written as frame lists ``<frame_dir> <num_frames> <label>``; a tree mixing both is
  refused. Hidden entries are skipped; other files are skipped with a warning.
* Paths are relative to the output folder (the lists' folder), which is where ``extract-frames``, ``check``
  and ``train`` look by default; with the default output folder (DATA_DIR's parent) they read
  ``<DATA_DIR name>/<class>/<clip>``, the layout ``demo-data`` writes.
* Each class sends ``round(val * clips)`` clips (rounded half up; at least 1 and at most all but one when it has
  two or more) to val. With ``group_by``, whole groups (clips of one source video) go to one side, chosen so
  that the val clip count comes closest to that target. A class's choice depends only on its clips, its name
  and ``seed``.
* Nothing is written until every clip is validated; the three files are then written atomically, and an
  error while writing removes the ones this run wrote.
"""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from tsnctl.data.decode import VIDEO_EXTENSIONS, count_folder_frames
from tsnctl.errors import UserError
from tsnctl.textfiles import write_atomic

LIST_NAMES = {"video": ("train_videos.txt", "val_videos.txt"), "frames": ("train_frames.txt", "val_frames.txt")}
LABEL_NAME = "labels.txt"


@dataclass(frozen=True)
class Clip:
    path: Path  # DATA_DIR/<class>/<clip>
    group: str | None  # the clip's name, or its --group-by match (None: the pattern does not match)
    frames: int | None = None  # frame folders only


@dataclass
class SplitSummary:
    kind: str  # video | frames
    classes: list[str]
    files: list[Path]  # train list, val list, labels file
    train: int = 0
    val: int = 0
    warnings: list[str] = field(default_factory=list)


def split_folder(data_dir: str | Path, out_dir: str | Path | None, val: float, group_by: str | None = None,
                 seed: int = 0, overwrite: bool = False) -> SplitSummary:
    """Validate the tree, split every class and write the train list, the val list and ``labels.txt``."""
    data_dir = Path(data_dir)
    out = Path(out_dir) if out_dir is not None else data_dir.absolute().parent
    if not (0 < val < 1):
        raise UserError(f"--val is {val}; it must be between 0 and 1 (exclusive), e.g. 0.2")
    pattern = _compile(group_by)
    classes = find_classes(data_dir)
    warnings: list[str] = []
    clips = {cls: find_clips(data_dir / cls, pattern, warnings) for cls in classes}
    kinds = {"frames" if clip.frames is not None else "video" for per_class in clips.values() for clip in per_class}
    if len(kinds) > 1:
        raise UserError(f"{data_dir}: holds both video files and frame folders; split one kind of clip at a time")
    unmatched = [c.path for per_class in clips.values() for c in per_class if c.group is None]
    if unmatched and len(unmatched) == sum(map(len, clips.values())):
        raise UserError(f"--group-by {group_by!r} matches no clip name in {data_dir}")
    if unmatched:
        raise UserError(f"{unmatched[0]}: --group-by {group_by!r} does not match this clip's name "
                        f"({len(unmatched)} clip(s) unmatched); every clip needs a group")
    kind = kinds.pop()
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for label, cls in enumerate(classes):
        # one generator per class: adding or removing a class leaves the other classes' splits as they were
        train, val_clips = split_class(clips[cls], val, random.Random(f"{seed}/{cls}"))
        if not val_clips:
            warnings.append(f"{data_dir / cls}: class {cls!r} has a single "
                            f"{'group' if pattern else 'clip'}; it goes to train only")
        for side, chosen in (("train", train), ("val", val_clips)):
            lines[side] += [_line(clip, label, out, kind) for clip in chosen]
    labels = "".join(f"{i} {name}\n" for i, name in enumerate(classes))
    files = [out / LIST_NAMES[kind][0], out / LIST_NAMES[kind][1], out / LABEL_NAME]
    _write_all(out, files, ["".join(lines["train"]), "".join(lines["val"]), labels], overwrite)
    return SplitSummary(kind, classes, files, len(lines["train"]), len(lines["val"]), warnings)


def _compile(group_by: str | None) -> re.Pattern | None:
    if group_by is None:
        return None
    try:
        return re.compile(group_by)
    except re.error as exc:
        raise UserError(f"--group-by {group_by!r} is not a valid regular expression ({exc})") from None


def find_classes(data_dir: Path) -> list[str]:
    """The class folders of ``data_dir`` sorted by name (hidden ones skipped; symbolic links refused)."""
    if not data_dir.exists():
        raise UserError(f"{data_dir}: folder not found")
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: not a folder (expected DATA_DIR/<class>/<clip>)")
    classes = []
    for entry in sorted(data_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            raise UserError(f"{entry}: symbolic link; split does not follow links (copy or move the class folder)")
        if entry.is_dir():
            _check_name(entry, "class folder")
            classes.append(entry.name)
    if not classes:
        raise UserError(f"{data_dir}: no class folders (expected DATA_DIR/<class>/<clip>)")
    return classes


def find_clips(class_dir: Path, pattern: re.Pattern | None, warnings: list[str]) -> list[Clip]:
    """The clips of one class folder, sorted by name, each with its group."""
    clips, skipped = [], []
    for entry in sorted(class_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            raise UserError(f"{entry}: symbolic link; split does not follow links (copy or move the clip)")
        if entry.is_dir():
            frames = count_folder_frames(entry)
        elif entry.suffix.lower() in VIDEO_EXTENSIONS:
            frames = None
        else:
            skipped.append(entry.name)
            continue
        _check_name(entry, "clip")
        clips.append(Clip(entry, _group(entry.name, pattern), frames))
    if skipped:
        warnings.append(f"{class_dir}: skipped {len(skipped)} file(s) that are not videos "
                        f"({', '.join(VIDEO_EXTENSIONS)}), e.g. {skipped[0]!r}")
    if not clips:
        raise UserError(f"{class_dir}: class folder holds no clips (video files or frame folders)")
    return clips


def _group(name: str, pattern: re.Pattern | None) -> str | None:
    if pattern is None:
        return name
    match = pattern.search(name)
    if match is None:
        return None
    return match.group(1) if pattern.groups and match.group(1) is not None else match.group(0)


def _check_name(path: Path, what: str) -> None:
    """Refuse names that a list or label line cannot carry: lists split on whitespace (a single inner space
    survives, as tsnctl's reader joins the path's fields with one space), a leading '#' makes a comment."""
    name = path.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{path}: {what} name is not UTF-8; rename it") from None
    if " ".join(name.split()) != name:
        raise UserError(f"{path}: {what} name has a tab, newline, leading/trailing or repeated space, which a "
                        "whitespace-separated list cannot carry; rename it")


def split_class(clips: list[Clip], val: float, rng: random.Random) -> tuple[list[Clip], list[Clip]]:
    """(train, val) clips of one class: whole groups, the val clip count as close as possible to the target."""
    groups: dict[str, list[Clip]] = {}
    for clip in clips:
        groups.setdefault(clip.group or clip.path.name, []).append(clip)
    names = sorted(groups)
    if len(names) < 2:
        return clips, []
    rng.shuffle(names)
    target = min(max(math.floor(val * len(clips) + 0.5), 1), len(clips) - 1)
    chosen: list[str] = []
    count = 0
    for name in names:
        size = len(groups[name])
        if len(chosen) < len(names) - 1 and abs(count + size - target) < abs(count - target):
            chosen.append(name)
            count += size
    if not chosen:  # every group overshoots the target by more than it misses: take the smallest
        chosen.append(min(names, key=lambda n: len(groups[n])))
    in_val = set(chosen)
    return ([c for c in clips if c.group not in in_val], [c for c in clips if c.group in in_val])


def _line(clip: Clip, label: int, out: Path, kind: str) -> str:
    rel = Path(os.path.relpath(clip.path.absolute(), out.absolute())).as_posix()
    if rel.startswith("#"):
        raise UserError(f"{clip.path}: its list path {rel!r} would start with '#', which makes a comment line")
    return f"{rel} {clip.frames} {label}\n" if kind == "frames" else f"{rel} {label}\n"


def _write_all(out: Path, files: list[Path], texts: list[str], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output folder is a file")
    for path in files:
        if path.is_symlink() or (path.exists() and (path.is_dir() or not overwrite)):
            kind = "a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else "an existing file"
            fix = "" if path.is_symlink() or path.is_dir() else " (--overwrite replaces it)"
            raise UserError(f"{path}: output is {kind}; not replaced{fix}")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for path, text in zip(files, texts, strict=True):
            existed = path.exists()
            write_atomic(path, text)
            if not existed:
                written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
