"""Extract JPEG frame folders from videos, as the reference does, and write the frame list.

Every frame is read at its native rate; ``img_00001.jpg`` is the first. Each video is written into a
temporary folder ``<name>.part`` that is renamed into place only when complete, so a killed run never
leaves a half-written folder under the final name, and a re-run skips every folder that exists (their
frames are complete by construction) and extracts the rest. ``extract_report.csv`` says what happened
to each video.
"""

from __future__ import annotations

import csv
import ctypes
import os
import shutil
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tsnctl.data.decode import VIDEO_EXTENSIONS, open_video
from tsnctl.data.lists import read_list, write_frame_list
from tsnctl.data.transforms import scaled_size
from tsnctl.errors import UserError
from tsnctl.prepare.shards import in_shard
from tsnctl.progress import ProgressFn, no_progress

# Encoded frames are written 32 at a time: interleaving every file write with decoding and encoding costs
# ~10% more CPU per frame (measured in docs/benchmarks.md); 32 frames are at most a few MB.
WRITE_BATCH = 32


@dataclass(frozen=True)
class VideoJob:
    name: str  # relative path of the video; also the frame folder's name under the output root
    path: Path
    label: int


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


@dataclass(frozen=True)
class JobResult:
    status: str  # extracted | skipped (folder already complete) | failed
    frames: int = 0
    size: int = 0
    reason: str = ""


def find_jobs(src: str | Path, root: str | Path = "") -> tuple[list[VideoJob], list[str] | None]:
    """Videos to extract: from a folder laid out ``class/video.ext`` (labels from the sorted class
    names, which are returned too) or from a video list ``<path> <label>``."""
    src = Path(src)
    if src.is_dir():
        classes = sorted(p.name for p in src.iterdir() if p.is_dir())
        jobs = [VideoJob(f"{cls}/{video.name}", video, label)
                for label, cls in enumerate(classes)
                for video in sorted((src / cls).iterdir()) if video.suffix.lower() in VIDEO_EXTENSIONS]
        if not jobs:
            raise UserError(f"{src}: no videos found in class folders ({', '.join(VIDEO_EXTENSIONS)})")
        return jobs, classes
    if not src.is_file():
        raise UserError(f"{src}: no such folder or video list")
    return [VideoJob(s.name, s.path, s.label) for s in read_list(src, "video", root)], None


def extract_frames(src: str | Path, out: str | Path, list_file: str | Path | None = None, root: str | Path = "",
                   workers: int = 1, short_side: int = 0, quality: int = 95, shard: tuple[int, int] | None = None,
                   progress: ProgressFn = no_progress, overwrite: bool = False) -> ExtractSummary:
    """Write ``out/<video>/img_00001.jpg ...`` for every video of ``src`` (or of one ``shard=(I, N)`` of them),
    a frame list and a report.

    Videos whose frame folder already exists are skipped (``overwrite`` extracts them again); videos
    that fail are listed in ``summary.failed`` and left out of the frame list, the others still count.
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
    if classes is not None:
        summary.label_file = out / "labels.txt"
        summary.label_file.write_text("".join(f"{i} {name}\n" for i, name in enumerate(classes)))

    results: dict[str, JobResult] = {}
    threads = 1 if workers > 1 else 0
    args = [(job, out, short_side, quality, overwrite, threads) for job in jobs]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent) as pool:
            for done, (name, result) in enumerate(pool.map(_extract_job, args), start=1):
                results[name] = result
                progress("extract", done, len(jobs), name)
    else:
        for done, arg in enumerate(args, start=1):
            name, result = _extract_job(arg)
            results[name] = result
            progress("extract", done, len(jobs), name)

    rows = []
    for job in jobs:
        result = results[job.name]
        if result.status == "failed":
            summary.failed.append((str(job.path), result.reason))
            continue
        rows.append((job.name, result.frames, job.label))
        summary.videos += 1
        summary.skipped += result.status == "skipped"
        summary.frames += result.frames
        summary.bytes_written += result.size
    write_frame_list(summary.list_file, rows)
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


def _extract_job(arg: tuple[VideoJob, Path, int, int, bool, int]) -> tuple[str, JobResult]:
    job, out, short_side, quality, overwrite, threads = arg
    cv2.setNumThreads(1)
    folder = out / job.name
    if folder.is_dir() and not overwrite:
        # Only a complete extraction is ever renamed to this name, so the folder is done.
        files = list(folder.glob("img_*.jpg"))
        return job.name, JobResult("skipped", len(files), sum(f.stat().st_size for f in files))
    try:
        frames, size = extract_video(job.path, folder, short_side, quality, threads)
        return job.name, JobResult("extracted", frames, size)
    except UserError as exc:
        return job.name, JobResult("failed", reason=str(exc))


def _write_report(path: Path, jobs: list[VideoJob], results: dict[str, JobResult]) -> None:
    """``path, status, frames, reason`` per video, in list order; written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "status", "frames", "reason"])
        for job in jobs:
            result = results[job.name]
            writer.writerow([job.name, result.status, result.frames, result.reason])
    os.replace(tmp, path)


def extract_video(video: Path, folder: Path, short_side: int = 0, quality: int = 95,
                  threads: int = 1) -> tuple[int, int]:
    """Write every frame of ``video`` into ``folder``; returns (frames, bytes written).

    The files are byte-identical to the reference's ``cv2.VideoCapture`` + ``cv2.imwrite`` at the same
    quality; ``threads`` are FFmpeg's decoding threads (see ``open_video``).
    """
    capture = open_video(video, threads)
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    count = size = 0
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    batch: list[np.ndarray] = []
    try:
        while True:
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
    finally:
        capture.release()
    if count == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{video}: no decodable video frames")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return count, size


def _write_frames(folder: Path, last: int, files: list[np.ndarray]) -> None:
    """Write the encoder's buffers as the frames ending at number ``last``. Plain os calls: a Python file
    object per frame costs ~0.05 ms of a ~0.6 ms frame."""
    for number, data in enumerate(files, start=last - len(files) + 1):
        fd = os.open(folder / f"img_{number:05d}.jpg", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data).cast("B")
            while view:  # a regular file takes it in one write unless the disk fills up
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
