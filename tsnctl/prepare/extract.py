"""Extract JPEG frame folders from videos, as the reference does, and write the frame list.

Every frame is read at its native rate; ``img_00001.jpg`` is the first. Each video is written, under its
lock, into a temporary folder ``<name>.part`` that gets its completion marker last and is renamed into place
only then, so a killed run never leaves a half-written folder under the final name, and a re-run skips
every folder whose marker and frames agree and extracts the rest (``tsnctl/prepare/folders.py``: folder
names, locks, markers). ``extract_report.csv`` says what happened to each video.
"""

from __future__ import annotations

import csv
import ctypes
import errno
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tsnctl.data.decode import VIDEO_EXTENSIONS, open_video
from tsnctl.data.lists import Sample, list_lines, read_list
from tsnctl.data.transforms import scaled_size
from tsnctl.data.video import window_frames
from tsnctl.errors import UserError
from tsnctl.prepare.folders import (
    LOCK,
    PART,
    FolderState,
    acquire,
    check_folders,
    check_reserved,
    folder_name,
    folder_state,
    locks_work,
    make_parent,
    release,
    remove,
    write_marker,
)
from tsnctl.prepare.shards import in_shard
from tsnctl.progress import ProgressFn, no_progress

# Encoded frames are written 32 at a time: interleaving every file write with decoding and encoding costs
# ~10% more CPU per frame (measured in docs/benchmarks.md); 32 frames are at most a few MB.
WRITE_BATCH = 32
STOP_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # OSErrors that end the run instead of failing one clip


@dataclass(frozen=True)
class VideoJob:
    name: str  # the video's path as written in the list (or class/video.ext); its shard is a hash of it
    path: Path
    label: int
    folder: str = ""  # its frame folder under OUT: the name, made relative and kept inside OUT (folder_name)
    where: str = ""  # the list line (or the video) it comes from, for messages
    window: tuple[float, float] | None = None  # a list line's time range (seconds): only those frames


@dataclass
class ExtractSummary:
    list_file: Path
    videos: int = 0
    frames: int = 0
    bytes_written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (video, reason)
    label_file: Path | None = None
    skipped: int = 0  # videos whose frame folder was already complete (counted in videos and frames too)
    report_file: Path | None = None
    unlocked: bool = False  # OUT's file system has no flock: concurrent runs on one clip are not kept apart


@dataclass(frozen=True)
class JobResult:
    status: str  # extracted | skipped (folder already complete) | failed | busy (locked by another run)
    frames: int = 0
    size: int = 0
    reason: str = ""


def find_jobs(src: str | Path, root: str | Path = "") -> tuple[list[VideoJob], list[str] | None]:
    """Videos to extract: from a folder laid out ``class/video.ext`` (labels from the sorted class
    names, which are returned too) or from a video list ``<path> <label>``. Refuses videos whose frame
    folders would coincide or nest."""
    src = Path(src)
    if src.is_dir():
        classes = sorted(p.name for p in src.iterdir() if p.is_dir())
        jobs = [VideoJob(f"{cls}/{video.name}", video, label, f"{cls}/{video.name}", str(video))
                for label, cls in enumerate(classes)
                for video in sorted((src / cls).iterdir()) if video.suffix.lower() in VIDEO_EXTENSIONS]
        if not jobs:
            raise UserError(f"{src}: no videos found in class folders ({', '.join(VIDEO_EXTENSIONS)})")
        check_folders(jobs)
        return jobs, classes
    if not src.is_file():
        raise UserError(f"{src}: no such folder or video list")
    samples = read_list(src, "video", root)
    line_numbers = [line_no for line_no, _ in list_lines(src)]  # read_list keeps every one of these lines
    jobs = [_list_job(s, f"{src}:{line_no}") for s, line_no in zip(samples, line_numbers, strict=True)]
    check_folders(jobs)
    return jobs, None


def _list_job(sample: Sample, where: str) -> VideoJob:
    """A list line's job; a time range gets its own name and folder (``<video>_<start>-<end>s``), so several
    ranges of one video are separate clips."""
    if sample.window is None:
        return VideoJob(sample.name, sample.path, sample.label, folder_name(sample.name), where)
    start, end = sample.window
    folder = folder_name(sample.name)
    return VideoJob(f"{sample.name} {start:g} {end:g}", sample.path, sample.label,
                    f"{folder}_{start:g}-{end:g}s" if folder else "", where, sample.window)


def extract_frames(src: str | Path, out: str | Path, list_file: str | Path | None = None, root: str | Path = "",
                   workers: int = 1, short_side: int = 0, quality: int = 95, shard: tuple[int, int] | None = None,
                   progress: ProgressFn = no_progress, overwrite: bool = False) -> ExtractSummary:
    """Write ``out/<video>/img_00001.jpg ...`` for every video of ``src`` (or of one ``shard=(I, N)`` of them),
    a frame list and a report.

    Videos whose frame folder is finished (its marker and frames agree) are skipped (``overwrite``
    extracts them again); clips that another run is writing are waited for; videos that fail are listed
    in ``summary.failed`` and left out of the frame list, the others still count.
    With several workers each decodes on one thread (the workers use the cores); one worker lets
    FFmpeg decode on all cores.
    """
    if not 1 <= quality <= 100:
        raise UserError(f"--quality must be in 1..100, got {quality}")
    if short_side < 0:
        raise UserError(f"--short-side must be 0 (keep size) or positive, got {short_side}")
    out = Path(out)
    jobs, classes = find_jobs(src, root)
    jobs = [job for job in jobs if in_shard(job.name, shard)]
    out.mkdir(parents=True, exist_ok=True)
    if list_file is None:
        list_file = out / default_list_name(src, classes is not None, shard)
    summary = ExtractSummary(Path(list_file))
    summary.report_file = out / default_report_name(src, classes is not None, shard)
    summary.label_file = out / "labels.txt" if classes is not None else None
    written = [p for p in (summary.list_file, summary.report_file, summary.label_file) if p is not None]
    check_reserved(jobs, {p.name for p in written if p.parent.resolve() == out.resolve()})
    if summary.label_file:
        _write_atomic(summary.label_file, "".join(f"{i} {name}\n" for i, name in enumerate(classes)))
    summary.unlocked = not locks_work(out)
    results = _run_jobs(jobs, out, short_side, quality, overwrite, workers, progress)

    rows = []
    for job in jobs:
        result = results[job.name]
        if result.status == "failed":
            summary.failed.append((str(job.path), result.reason))
            continue
        rows.append(f"{job.folder} {result.frames} {job.label}\n")
        summary.videos += 1
        summary.skipped += result.status == "skipped"
        summary.frames += result.frames
        summary.bytes_written += result.size
    _write_atomic(summary.list_file, "".join(rows))  # lines as tsnctl.data.lists.write_frame_list writes them
    _write_report(summary.report_file, jobs, results)
    return summary


def default_list_name(src: str | Path, from_folder: bool, shard: tuple[int, int] | None = None) -> str:
    """``frame_list.txt`` for a folder, ``<list stem>_frames.txt`` for a list; shards add ``.shard-I-of-N``."""
    stem = "frame_list" if from_folder else f"{Path(src).stem}_frames"
    return f"{stem}.shard-{shard[0]}-of-{shard[1]}.txt" if shard else f"{stem}.txt"


def default_report_name(src: str | Path, from_folder: bool, shard: tuple[int, int] | None = None) -> str:
    """``extract_report.csv`` for a folder, ``<list stem>_extract_report.csv`` for a list (plus the shard)."""
    stem = "extract_report" if from_folder else f"{Path(src).stem}_extract_report"
    return f"{stem}.shard-{shard[0]}-of-{shard[1]}.csv" if shard else f"{stem}.csv"


def _die_with_parent() -> None:
    """Linux: end this worker when the main process dies (even by SIGKILL), so that no orphan keeps
    writing into a folder that a re-run is extracting again."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _run_jobs(jobs: list[VideoJob], out: Path, short_side: int, quality: int, overwrite: bool, workers: int,
              progress: ProgressFn) -> dict[str, JobResult]:
    """Extract every job; a clip locked by another run is left for a second pass that waits for its lock
    (and then usually finds it finished), so concurrent runs share the work instead of queueing."""
    results: dict[str, JobResult] = {}
    threads = 1 if workers > 1 else 0
    pending = jobs
    for wait in (False, True):
        if wait:
            progress("extract", len(results), len(jobs), f"waiting for {len(pending)} clip(s) another run is writing")
        args = [(job, out, short_side, quality, overwrite, threads, wait) for job in pending]
        for name, result in _map(_extract_job, args, workers):
            if result.status != "busy":
                results[name] = result
                progress("extract", len(results), len(jobs), name)
        pending = [job for job in pending if job.name not in results]
        if not pending:
            break
    return results


def _map(fn: Callable[[tuple], tuple[str, JobResult]], args: list[tuple],
         workers: int) -> Iterator[tuple[str, JobResult]]:
    """``fn`` over ``args`` in order: in worker processes, or here for one worker or one job."""
    if workers > 1 and len(args) > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent) as pool:
            yield from pool.map(fn, args)
    else:
        yield from map(fn, args)


def _extract_job(arg: tuple[VideoJob, Path, int, int, bool, int, bool]) -> tuple[str, JobResult]:
    job, out, short_side, quality, overwrite, threads, wait = arg
    cv2.setNumThreads(1)
    try:
        folder = make_parent(out, job.folder)
        lock = acquire(folder.with_name(folder.name + LOCK), wait)
        if lock is None:
            return job.name, JobResult("busy")
        try:
            return job.name, _extract_locked(job, folder, short_side, quality, overwrite, threads)
        finally:
            release(lock)
    except UserError as exc:
        return job.name, JobResult("failed", reason=str(exc))
    except OSError as exc:  # e.g. a folder named like a clip's lock file, a permission
        if exc.errno in STOP_ERRORS:  # every further clip would fail the same way
            raise UserError(f"{exc.filename}: {exc.strerror}", exit_code=1) from None
        return job.name, JobResult("failed", reason=f"{exc.filename}: {exc.strerror}")


def _extract_locked(job: VideoJob, folder: Path, short_side: int, quality: int, overwrite: bool,
                    threads: int) -> JobResult:
    """Skip a finished folder, refuse one that is not ours (a link, a file, other files), else extract."""
    state = FolderState("missing") if overwrite else folder_state(folder, job.path)
    if state.status == "done":
        base = str(folder)  # plain strings: a Path per frame costs more than its stat
        size = sum(os.stat(f"{base}/img_{i:05d}.jpg").st_size for i in range(1, state.frames + 1))
        return JobResult("skipped", state.frames, size)
    if state.status == "refuse":
        return JobResult("failed", reason=state.reason)
    frames, size = extract_video(job.path, folder, short_side, quality, threads, job.window)
    return JobResult("extracted", frames, size, state.reason)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file of this process (concurrent runs may write the same file)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_report(path: Path, jobs: list[VideoJob], results: dict[str, JobResult]) -> None:
    """``path, status, frames, reason, frame_dir`` per video, in list order; written atomically."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "status", "frames", "reason", "frame_dir"])
        for job in jobs:
            result = results[job.name]
            writer.writerow([job.name, result.status, result.frames, result.reason, job.folder])
    os.replace(tmp, path)


def extract_video(video: Path, folder: Path, short_side: int = 0, quality: int = 95,
                  threads: int = 1, window: tuple[float, float] | None = None) -> tuple[int, int]:
    """Write every frame of ``video`` (or of its time range ``window``, numbered from 1) into ``folder``;
    returns (frames, bytes written).

    The files are byte-identical to the reference's ``cv2.VideoCapture`` + ``cv2.imwrite`` at the same
    quality; ``threads`` are FFmpeg's decoding threads (see ``open_video``). A window's frames are those
    the video path reads for it (``data.video.window_frames``).
    """
    first, last = window_frames(video, window) if window else (0, None)
    capture = open_video(video, threads)
    tmp = folder.with_name(folder.name + PART)
    remove(tmp)  # a leftover of a killed run (or a link, removed itself, never followed)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    count = size = 0
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    batch: list[np.ndarray] = []
    try:
        for _ in range(first):  # before the window: decoded (later frames may refer to them), not written
            if not capture.grab():
                break
        while last is None or first + count < last:
            ok, frame = capture.read()
            if not ok:
                break
            if short_side:
                height, width = scaled_size(frame.shape[0], frame.shape[1], short_side)
                if (height, width) != frame.shape[:2]:
                    frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
            ok, data = cv2.imencode(".jpg", frame, params)
            if not ok:
                raise UserError(f"{video}: JPEG encoding failed at frame {count + 1}")
            count += 1
            size += data.size
            batch.append(data)
            if len(batch) == WRITE_BATCH:
                _write_frames(tmp, count, batch)
                batch.clear()
        _write_frames(tmp, count, batch)
    except BaseException as exc:  # disk full, read-only, Ctrl-C: no half-written frames are left behind
        try:
            remove(tmp)
        except OSError:
            pass  # the original error is the one worth reporting
        if isinstance(exc, OSError) and exc.filename is None:  # os.write names no file
            raise OSError(exc.errno, exc.strerror, str(folder)) from None
        raise
    finally:
        capture.release()
    if count == 0:
        remove(tmp)
        raise UserError(f"{video}: no decodable video frames")
    info = {"source": str(video), "source_bytes": video.stat().st_size, "short_side": short_side, "quality": quality}
    write_marker(tmp, count, {**info, "window": list(window)} if window else info)
    remove(folder)
    os.rename(tmp, folder)
    return count, size


def _write_frames(folder: Path, last: int, files: list[np.ndarray]) -> None:
    """Write the encoder's buffers as the frames ending at number ``last``. Plain os calls: a Python file
    object per frame costs ~0.05 ms of a ~0.6 ms frame."""
    for number, data in enumerate(files, start=last - len(files) + 1):
        fd = os.open(folder / f"img_{number:05d}.jpg", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        try:
            view = memoryview(data).cast("B")
            while view:  # a regular file takes it in one write unless the disk fills up
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
