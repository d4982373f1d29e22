"""Where each clip's frames go inside OUT, who may write them, and when a folder counts as finished.

* Every list path becomes a relative folder inside OUT: ``class/video.mp4`` stays as it is; an absolute path
  loses its leading ``/`` and ``.``, ``..`` and empty components are normalized away, so no list line can
  name a folder outside OUT. Two videos whose folders coincide or nest are refused before anything is written.
* A clip is written only under its lock ``OUT/<folder>.lock`` (``fcntl.flock``: the kernel releases it when
  the holder dies, so no lock is ever stale). Per-clip locks let shards of any count, re-submitted shards and
  an accidental second run share one OUT: each clip is written by one process at a time, the others wait
  for it and then find it finished.
* A folder counts as finished only when its marker ``.tsnctl-frames.json`` (written last into the ``.part``
  folder, which is then renamed into place) names a frame count and the folder holds exactly those frames.
* Nothing in OUT that is a symbolic link is followed for writing or deleting.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import av

from tsnctl.data import video as video_reader
from tsnctl.errors import UserError

MARKER = ".tsnctl-frames.json"
PART, LOCK = ".part", ".lock"
FRAME_NAME = re.compile(r"img_(\d{5,})\.jpg")
# flock on a file system that does not implement it (Lustre without -o flock, NFS without lockd)
NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP}


def folder_name(name: str) -> str:
    """The frame folder of a video's list path, relative to OUT (empty when the path names no file)."""
    normal = posixpath.normpath("/" + name.lstrip("/"))  # '..' cannot climb above '/'
    return normal.lstrip("/")


def check_folders(jobs: list) -> None:
    """Refuse videos whose frame folders (or their ``.part``/``.lock`` siblings) coincide or nest.
    ``jobs`` have ``folder``, ``name`` and ``where``."""
    owner: dict[str, object] = {}  # every path a video writes -> that video
    parents: dict[str, object] = {}  # every folder above a video's frame folder -> that video
    for job in jobs:
        if not job.folder:
            raise UserError(f"{job.where}: {job.name!r} names no video file")
        ancestors = [posixpath.dirname(job.folder)]
        while ancestors[-1]:
            ancestors.append(posixpath.dirname(ancestors[-1]))
        own = [job.folder + suffix for suffix in ("", PART, LOCK)]
        for path in own + ancestors[:-1]:
            other = owner.get(path) or (parents.get(path) if path in own else None)
            if other is not None:
                raise UserError(f"{other.where} ({other.name!r}) and {job.where} ({job.name!r}) map to the same "
                                f"or nested frame folders in OUT ({other.folder}, {job.folder}); give the videos "
                                "distinct paths")
        owner.update(dict.fromkeys(own, job))
        parents.update(dict.fromkeys(ancestors[:-1], job))


def check_reserved(jobs: list, reserved: set[str]) -> None:
    """Refuse frame folders named like the files that extraction writes into OUT (``reserved``)."""
    for job in jobs:
        top = job.folder.split("/")[0]
        if any(top == name or top.startswith(name + ".tmp") for name in reserved):
            raise UserError(f"{job.where}: {job.name!r} would write into OUT/{top}, which extract-frames writes "
                            "itself; rename the video or choose another --list-file")


def make_parent(out: Path, folder: str) -> Path:
    """Create the folders above ``OUT/folder`` (refusing symbolic links on the way); returns ``OUT/folder``."""
    path = out
    for part in folder.split("/")[:-1]:
        path = path / part
        try:
            path.mkdir()
        except FileExistsError:
            if path.is_symlink() or not path.is_dir():
                kind = "a symbolic link" if path.is_symlink() else "not a folder"
                raise UserError(f"{path} is {kind}; extract-frames does not write through it") from None
    target = out / folder
    if os.path.commonpath([os.path.realpath(target.parent), os.path.realpath(out)]) != os.path.realpath(out):
        raise UserError(f"{target} is outside the output folder {out}")  # cannot happen after folder_name
    return target


@dataclass
class ClipLock:
    path: Path
    fd: int
    held: bool  # False where the file system has no locks: the run goes on unprotected


def acquire(path: Path, wait: bool) -> ClipLock | None:
    """Lock ``path`` exclusively; None when another process holds it and ``wait`` is False.

    The lock file is removed on release, so a locker checks that the file it locked is still the one at
    ``path`` (else it locked a file that its holder had just removed, and tries again)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError(f"{path} is a symbolic link; extract-frames does not write through it") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            if exc.errno in NO_LOCKS:
                return ClipLock(path, fd, held=False)
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if same:
            return ClipLock(path, fd, held=True)
        os.close(fd)


def release(lock: ClipLock) -> None:
    """Remove the lock file while still holding it, then unlock."""
    try:
        os.unlink(lock.path)
    except FileNotFoundError:
        pass
    os.close(lock.fd)


def locks_work(out: Path) -> bool:
    """Whether the file system of ``out`` implements flock (probed once per run)."""
    lock = acquire(out / ".tsnctl-lock-probe", wait=False)
    if lock is None:  # another run is probing
        return True
    release(lock)
    return lock.held


def remove(path: Path) -> None:
    """Remove ``path`` inside OUT: a symbolic link itself (never its target), a file, or a folder tree
    (``shutil.rmtree`` does not follow the links inside)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def write_marker(folder: Path, frames: int, info: dict, atomic: bool = False) -> None:
    """Write the completion marker into ``folder``. Into a fresh ``.part`` folder it is written directly:
    the folder's rename is what makes it visible. ``atomic`` (a folder already in place) writes a
    temporary file and renames it. Neither fsyncs: the frames are not synced either (an fsync per clip
    costs more than writing a short clip's frames), so a marker proves that the writer finished, not
    that a power loss spared the disk; a marker torn by one reads as no marker."""
    path = folder / (MARKER + ".tmp" if atomic else MARKER)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, json.dumps({"frames": frames, **info}).encode())
    finally:
        os.close(fd)
    if atomic:
        os.rename(path, folder / MARKER)


@dataclass(frozen=True)
class FolderState:
    status: str  # missing | done | redo (ours, not finished) | refuse (not ours: a link, a file, other files)
    frames: int = 0
    reason: str = ""


def folder_state(folder: Path, video: Path) -> FolderState:
    """Whether ``folder`` is a finished extraction of ``video``: a marker naming N frames and exactly
    ``img_00001.jpg`` .. N. A folder without a marker (written before markers) counts as finished when
    its frames run from 1 to the video's frame count; it gets its marker then."""
    if folder.is_symlink():
        return FolderState("refuse", reason=f"{folder} is a symbolic link; not followed (remove it, or "
                                            "--overwrite replaces the link)")
    if not folder.exists():
        return FolderState("missing")
    if not folder.is_dir():
        return FolderState("refuse", reason=f"{folder} exists and is not a folder (remove it or use --overwrite)")
    names = os.listdir(folder)
    numbers = sorted(int(m.group(1)) for m in map(FRAME_NAME.fullmatch, names) if m)
    other = [n for n in names if not FRAME_NAME.fullmatch(n) and n not in (MARKER, MARKER + ".tmp")]
    if other:
        return FolderState("refuse", reason=f"{folder} holds files that are not frames (e.g. {sorted(other)[0]}); "
                                            "not touched (remove it or use --overwrite)")
    contiguous = numbers == list(range(1, len(numbers) + 1))
    marked = _marker_frames(folder)
    if marked is not None:
        if contiguous and marked == len(numbers):
            return FolderState("done", marked)
        return FolderState("redo", reason=f"folder held {len(numbers)} of its {marked} frames; extracted again")
    expected = _source_frames(video)
    if contiguous and numbers and len(numbers) == expected:
        write_marker(folder, expected, {"adopted": True}, atomic=True)
        return FolderState("done", expected)
    return FolderState("redo", reason=f"folder held {len(numbers)} frames and no completion marker; extracted again")


def _marker_frames(folder: Path) -> int | None:
    try:
        fd = os.open(folder / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        frames = json.loads(os.read(fd, 1 << 16)).get("frames")
    except (ValueError, AttributeError):
        return None
    finally:
        os.close(fd)
    return frames if isinstance(frames, int) and frames > 0 else None


def source_frames(path: Path) -> int:
    """Frames of a video from its container header (no decoding; exact for MP4, an upper bound for some AVI
    files), or from counting its packets when the header has none."""
    try:
        with av.open(str(path)) as container:
            header = container.streams.video[0].frames if container.streams.video else 0
    except av.FFmpegError as exc:
        raise UserError(f"{path}: not a readable video ({exc})") from None
    return header if header > 0 else video_reader.count_frames(path)


def _source_frames(path: Path) -> int:
    try:
        return source_frames(path)
    except (UserError, OSError):
        return -1
