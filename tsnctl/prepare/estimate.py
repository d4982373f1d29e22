"""``extract-frames --dry-run``: how many frames extraction would write and how much disk they would take.

Frame counts come from the container headers (no decoding; exact for MP4, an upper bound for some AVI
files), or from counting packets when a header has none. Bytes per frame are measured by decoding and
encoding a few frames spread over a sample of the videos, with the same size and quality settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tsnctl.data import video
from tsnctl.data.transforms import scaled_size
from tsnctl.errors import UserError
from tsnctl.prepare.extract import find_jobs
from tsnctl.prepare.folders import source_frames
from tsnctl.progress import ProgressFn, no_progress


@dataclass
class ExtractEstimate:
    videos: int = 0
    frames: int = 0
    bytes_per_frame: float = 0.0
    probed_frames: int = 0  # frames encoded to measure bytes_per_frame
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (video, reason)

    @property
    def total_bytes(self) -> float:
        return self.frames * self.bytes_per_frame


def estimate_extraction(src: str | Path, root: str | Path = "", short_side: int = 0, quality: int = 95,
                        probe_videos: int = 8, progress: ProgressFn = no_progress) -> ExtractEstimate:
    """Count the frames of every video of ``src`` and estimate the JPEG bytes ``extract-frames`` would write."""
    jobs, _ = find_jobs(src, root)
    estimate = ExtractEstimate()
    counts = {}
    clip_frames = 0  # a time range counts its own frames; the probes below use whole videos
    for done, job in enumerate(jobs, start=1):
        try:
            if job.path not in counts:
                counts[job.path] = source_frames(job.path)
            first, last = video.window_frames(job.path, job.window) if job.window else (0, counts[job.path])
            clip_frames += last - first
        except UserError as exc:
            estimate.unreadable.append((str(job.path), str(exc)))
        progress("dry run", done, len(jobs), job.name)
    estimate.videos, estimate.frames = len(jobs) - len(estimate.unreadable), clip_frames
    probes = list(counts)[:: max(1, len(counts) // probe_videos)][:probe_videos]
    sizes = [size for path in probes for size in _encoded_sizes(path, counts[path], short_side, quality)]
    estimate.probed_frames = len(sizes)
    estimate.bytes_per_frame = float(np.mean(sizes)) if sizes else 0.0
    return estimate


def _encoded_sizes(path: Path, count: int, short_side: int, quality: int, per_video: int = 3) -> list[int]:
    """JPEG sizes of ``per_video`` frames spread over the video, encoded as extraction would."""
    wanted = [int(count * (i + 0.5) / per_video) for i in range(per_video)]
    try:
        frames = video.read_video(path, lambda n: [min(i, n - 1) for i in wanted])
    except UserError:
        return []
    sizes = []
    for frame in frames:
        if short_side:
            height, width = scaled_size(*frame.shape[:2], short_side)
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        ok, data = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        sizes.append(data.size if ok else 0)
    return sizes
