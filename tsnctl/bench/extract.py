"""``bench extract``: frames/s of ``extract-frames`` on one core, against the ``ffmpeg`` command line.

The clip is a generated 340x256 H.264 mp4 (10 s at 25 fps by default). tsnctl's extraction (decode, JPEG
encode, write) and ``ffmpeg -threads 1 -i clip.mp4 -q:v 2 -threads 1 img_%05d.jpg`` run alternately, into
fresh folders, so that load on the machine hits both alike; then tsnctl's decode and encode alone, and
the two JPEG encoders on offer (OpenCV, which the reference uses and whose files tsnctl keeps, and
simplejpeg). Rates are frames per CPU-second (this process's CPU time, or the ffmpeg child's from
``getrusage(RUSAGE_CHILDREN)``, all its threads and its start-up included), i.e. per core, whatever else
the machine is running. ``-threads 1`` before and after ``-i`` gives the decoder and the encoder no worker
threads; ffmpeg (7+) still runs demuxer, decoder, filter, encoder and muxer each in a thread of its own,
one frame at a time, which CPU time counts whole.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import simplejpeg

from tsnctl.bench import synthetic
from tsnctl.data.decode import open_video
from tsnctl.prepare.extract import extract_video
from tsnctl.progress import ProgressFn, no_progress

FFMPEG_CASE = "ffmpeg -threads 1 -i clip.mp4 -q:v 2 -threads 1 img_%05d.jpg"


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
    ffmpeg: str = ""  # the binary compared against and its version, or why there was none
    ratio_to_ffmpeg: float | None = None  # tsnctl extract-frames / ffmpeg, frames per CPU-second


def find_ffmpeg() -> str | None:
    """``ffmpeg`` from the PATH, else the static build inside the imageio-ffmpeg wheel (the ``tsnctl[bench]``
    extra, for machines without a system ffmpeg), else None."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):  # RuntimeError: a wheel without its binary
        return None


def ffmpeg_version(exe: str) -> str:
    """``ffmpeg version n9.0.2...``: the first line of ``ffmpeg -version`` up to its copyright."""
    first = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    return first.split(" Copyright")[0]


def bench_extract(repeats: int = 3, progress: ProgressFn = no_progress, num_frames: int = 250) -> ExtractBench:
    cv2.setNumThreads(1)
    exe = find_ffmpeg()
    with tempfile.TemporaryDirectory(prefix="tsnctl-bench-") as tmp:
        root = Path(tmp)
        frames = synthetic.render_frames(num_frames)
        clip = root / "clip.mp4"
        codec = synthetic.write_h264(clip, frames)
        result = ExtractBench(f"{num_frames / 25:g} s 340x256 {codec} mp4, 25 fps", num_frames)
        result.ffmpeg = f"{exe} ({ffmpeg_version(exe)})" if exe else "not found: comparison skipped"
        progress("bench extract", 0, 3, "extract-frames and ffmpeg")
        ours, theirs = [], []
        for _ in range(repeats):
            shutil.rmtree(root / "out", ignore_errors=True)  # neither tool pays for deleting the last run's files
            ours.append(_timed(lambda: extract_video(clip, root / "out")))
            if exe:
                theirs.append(_ffmpeg_cpu_time(exe, clip, root / "ffmpeg"))
        result.cases.append(ExtractCase("tsnctl extract-frames (decode + encode + write)", num_frames / min(ours)))
        progress("bench extract", 1, 3, "decode")
        best = min(_timed(lambda: _decode_all(clip, 1)) for _ in range(repeats))
        result.cases.append(ExtractCase("  decode to BGR only, 1 FFmpeg thread (each worker)", num_frames / best))
        best = min(_timed(lambda: _decode_all(clip, 0)) for _ in range(repeats))
        result.cases.append(ExtractCase("  decode to BGR only, FFmpeg's threads (--workers 1)", num_frames / best,
                                        "more CPU per frame, less wall time"))
        progress("bench extract", 2, 3, "encode")
        bgr = [f[:, :, ::-1].copy() for f in frames[:50]]
        best = min(_timed(lambda: [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95]) for f in bgr])
                   for _ in range(repeats))
        result.cases.append(ExtractCase("  JPEG encode only, cv2.imencode q95 (used)", len(bgr) / best))
        best = min(_timed(lambda: [simplejpeg.encode_jpeg(f, 95, "BGR", "420") for f in bgr]) for _ in range(repeats))
        result.cases.append(ExtractCase("  JPEG encode only, simplejpeg q95 4:2:0", len(bgr) / best,
                                        "files differ from the reference's cv2.imwrite"))
        progress("bench extract", 3, 3, "")
    if theirs:
        result.cases.append(ExtractCase(FFMPEG_CASE, num_frames / min(theirs), "its start-up included"))
        result.ratio_to_ffmpeg = min(theirs) / min(ours)
        result.cases[0].note = f"{result.ratio_to_ffmpeg:.2f}x ffmpeg's frames/s"
    else:
        result.cases.append(ExtractCase(FFMPEG_CASE, None, "ffmpeg not found (PATH, imageio-ffmpeg): skipped"))
    return result


def _ffmpeg_cpu_time(exe: str, clip: Path, out: Path) -> float:
    """CPU seconds of one ffmpeg run (all its threads) writing the frames of ``clip`` into an empty ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    command = [exe, "-loglevel", "error", "-nostdin", "-y", "-threads", "1", "-i", str(clip), "-q:v", "2",
               "-threads", "1", str(out / "img_%05d.jpg")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def _decode_all(clip: Path, threads: int) -> int:
    capture = open_video(clip, threads)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def _timed(fn: Callable[[], object]) -> float:
    """CPU seconds of this process (all its threads) spent in ``fn``."""
    started = time.process_time()
    fn()
    return time.process_time() - started
