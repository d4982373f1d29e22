"""``bench extract``: frames/s of ``extract-frames`` on one core, against the ``ffmpeg`` command line.

The clip is a generated 10 s 340x256 H.264 mp4. tsnctl's extraction is timed whole (decode, JPEG encode,
write), then its decode and encode alone, and the two JPEG encoders on offer (OpenCV, which the reference
uses and whose files tsnctl keeps, and simplejpeg). ``ffmpeg -threads 1 -i clip.mp4 -q:v 2 img_%05d.jpg``
runs when ``ffmpeg`` is on the PATH. Rates are frames per CPU-second (this process's CPU time, or the
ffmpeg child's), i.e. per core, whatever else the machine is running.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import simplejpeg

from tsnctl.bench import synthetic
from tsnctl.extract import extract_video
from tsnctl.progress import ProgressFn, no_progress


@dataclass
class ExtractCase:
    name: str
    frames_per_s: float | None
    note: str = ""


@dataclass
class ExtractBench:
    clip: str
    frames: int
    cases: list[ExtractCase] = field(default_factory=list)
    ratio_to_ffmpeg: float | None = None  # tsnctl extract-frames / ffmpeg, frames per second


def bench_extract(repeats: int = 3, progress: ProgressFn = no_progress) -> ExtractBench:
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="tsnctl-bench-") as tmp:
        root = Path(tmp)
        frames = synthetic.render_frames(250)
        clip = root / "clip.mp4"
        codec = synthetic.write_h264(clip, frames)
        result = ExtractBench(f"10 s 340x256 {codec} mp4, 25 fps", len(frames))
        progress("bench extract", 0, 4, "extract-frames")
        best = min(_timed(lambda: extract_video(clip, root / "out")) for _ in range(repeats))
        result.cases.append(ExtractCase("tsnctl extract-frames (decode + encode + write)", len(frames) / best))
        progress("bench extract", 1, 4, "decode")
        best = min(_timed(lambda: _decode_all(clip)) for _ in range(repeats))
        result.cases.append(ExtractCase("  decode only (OpenCV)", len(frames) / best))
        progress("bench extract", 2, 4, "encode")
        bgr = [f[:, :, ::-1].copy() for f in frames[:50]]
        best = min(_timed(lambda: [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95]) for f in bgr])
                   for _ in range(repeats))
        result.cases.append(ExtractCase("  JPEG encode only, cv2.imencode q95 (used)", len(bgr) / best))
        best = min(_timed(lambda: [simplejpeg.encode_jpeg(f, 95, "BGR", "420") for f in bgr]) for _ in range(repeats))
        result.cases.append(ExtractCase("  JPEG encode only, simplejpeg q95 4:2:0", len(bgr) / best,
                                        "files differ from the reference's cv2.imwrite"))
        progress("bench extract", 3, 4, "ffmpeg")
        result.cases.append(_ffmpeg(clip, root / "ffmpeg", len(frames), repeats))
        progress("bench extract", 4, 4, "")
    ours, ffmpeg = result.cases[0].frames_per_s, result.cases[-1].frames_per_s
    result.ratio_to_ffmpeg = ours / ffmpeg if ours and ffmpeg else None
    return result


def _ffmpeg(clip: Path, out: Path, frames: int, repeats: int) -> ExtractCase:
    name = "ffmpeg -threads 1 -i clip.mp4 -q:v 2 img_%05d.jpg"
    exe = shutil.which("ffmpeg")
    if exe is None:
        return ExtractCase(name, None, "ffmpeg is not installed: comparison skipped")
    out.mkdir()
    command = [exe, "-loglevel", "error", "-y", "-threads", "1", "-i", str(clip), "-q:v", "2", "-threads", "1",
               str(out / "img_%05d.jpg")]
    best = min(_child_cpu_time(lambda: subprocess.run(command, check=True)) for _ in range(repeats))
    return ExtractCase(name, frames / best)


def _child_cpu_time(fn) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def _decode_all(clip: Path) -> int:
    capture = cv2.VideoCapture(str(clip))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def _timed(fn) -> float:
    """CPU seconds of this process (all its threads) spent in ``fn``."""
    started = time.process_time()
    fn()
    return time.process_time() - started
