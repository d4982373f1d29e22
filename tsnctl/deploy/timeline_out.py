"""``predict --timeline``: score a video or stream window by window (``timeline.py``) and write the results.

Into the output folder: ``windows.csv`` (one row per window: its frames and seconds, the top class and every
class's probability), ``segments.csv`` (``start,end,label,score``), ``timeline.json`` (settings, segments
and windows), ``segments.srt`` (the segments as subtitles) and ``timeline.png`` (class probabilities over time
above a band of the segments); optionally the video with the current segment's label drawn on every frame.
Every file is written to a temporary name and renamed into place, ``timeline.json`` last.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tsnctl.data.decode import VIDEO_EXTENSIONS
from tsnctl.data.video import iter_frames, stream_info
from tsnctl.deploy.predict import Predictor
from tsnctl.deploy.timeline import Segment, Span, WindowScore, collect_windows, merge_segments, score_windows
from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress
from tsnctl.textfiles import write_atomic

DEFAULT_FPS = 25.0  # when the container gives no frame rate (as deploy/stream.py)
PLOT_CLASSES = 8  # the timeline picture draws the classes that reach the highest probabilities, at most this many


@dataclass
class Timeline:
    source: str
    fps: float
    frames: int  # frames read
    window: int  # frames
    stride: int  # frames
    smooth: int
    threshold: float
    segments: list[Segment]
    windows: list[WindowScore]
    files: list[Path]  # what was written


def predict_timeline(predictor: Predictor, source: str, out: str | Path, window: Span, stride: Span,
                     smooth: int = 1, threshold: float = 0.0, names: list[str] | None = None,
                     stream: bool = False, save_video: str | Path | None = None,
                     progress: ProgressFn = no_progress) -> Timeline:
    """Score ``source`` (a video file, or with ``stream`` anything ``--stream`` reads) window by window, merge
    the windows into segments and write the files of the module doc into ``out``."""
    names = names or predictor.class_names
    if smooth < 1:
        raise UserError(f"--smooth {smooth}: must be at least 1 (1: no smoothing)")
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold}: must be a probability between 0 and 1")
    if save_video is not None and stream:
        raise UserError("--save-video with --timeline draws the segments on a video file, not on a --stream")
    frames, fps, total = _open(source, stream)
    w, s = window.frames(fps), stride.frames(fps)
    counter = _Counter(frames)
    windows = collect_windows(score_windows(predictor, counter, w, s),
                              lambda win: progress("timeline", min(win.end, total or win.end), total or win.end,
                                                   f"{win.end / fps:.1f}s"),
                              stop_on_interrupt=stream)
    if not windows:  # a live stream stopped (Ctrl-C) before its first window filled
        raise UserError(f"{source}: stopped before the first window was scored; nothing written", exit_code=1)
    segments = merge_segments(windows, fps, counter.count / fps, names, smooth, threshold)
    result = Timeline(source, fps, counter.count, w, s, smooth, threshold, segments, windows, [])
    result.files = write_timeline(result, out, names)
    if save_video is not None:
        annotate_video(Path(source), segments, save_video, fps)
        result.files.append(Path(save_video))
    return result


class _Counter:
    """Passes frames through and counts them (the video's length is known once it has been read)."""

    def __init__(self, frames: Iterator[np.ndarray]) -> None:
        self.frames, self.count = frames, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.frames:
            self.count += 1
            yield frame


def _open(source: str, stream: bool) -> tuple[Iterator[np.ndarray], float, int]:
    """Frames (RGB), frame rate and (estimated) frame count of a video file, or of a stream through OpenCV."""
    if stream:
        from tsnctl.deploy.stream import open_source

        capture, fps = open_source(source)
        return _capture_frames(capture), fps, 0
    path = Path(source)
    if path.is_dir() or (path.exists() and path.suffix.lower() not in VIDEO_EXTENSIONS):
        raise UserError(f"{path}: --timeline reads a video file ({', '.join(VIDEO_EXTENSIONS)})")
    fps, total = stream_info(path)
    return iter_frames(path), fps if 0 < fps < 1000 else DEFAULT_FPS, total


def _capture_frames(capture) -> Iterator[np.ndarray]:
    import cv2

    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def write_timeline(t: Timeline, out: str | Path, names: list[str]) -> list[Path]:
    """Write the files of the module doc into ``out`` (created); returns their paths."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (--output names the timeline's folder)")
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "windows.csv", out / "segments.csv", out / "segments.srt", out / "timeline.png",
             out / "timeline.json"]
    write_atomic(files[0], windows_csv(t.windows, t.fps, names))
    write_atomic(files[1], segments_csv(t.segments))
    write_atomic(files[2], segments_srt(t.segments))
    plot_timeline(t, names, files[3])
    summary = {k: v for k, v in asdict(t).items() if k not in ("windows", "segments", "files")}
    summary |= {"window_s": t.window / t.fps, "stride_s": t.stride / t.fps, "classes": names,
                "segments": [asdict(seg) for seg in t.segments],
                "windows": [{"start": w.start / t.fps, "end": w.end / t.fps, "frames": [w.start, w.end],
                             "label": names[int(w.probs.argmax())], "prob": round(float(w.probs.max()), 6)}
                            for w in t.windows]}
    write_atomic(files[4], json.dumps(summary, indent=1) + "\n")
    return files


def windows_csv(windows: list[WindowScore], fps: float, names: list[str]) -> str:
    """``start_frame,end_frame,start,end,label,prob,<class 0>,<class 1>,...`` (end: one past the last frame)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["start_frame", "end_frame", "start", "end", "label", "prob", *names])
    for w in windows:
        best = int(w.probs.argmax())
        writer.writerow([w.start, w.end, f"{w.start / fps:.3f}", f"{w.end / fps:.3f}", names[best],
                         f"{w.probs[best]:.6f}", *(f"{p:.6f}" for p in w.probs)])
    return buf.getvalue()


def segments_csv(segments: list[Segment]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["start", "end", "label", "score"])
    for seg in segments:
        writer.writerow([f"{seg.start:.3f}", f"{seg.end:.3f}", seg.label, f"{seg.score:.4f}"])
    return buf.getvalue()


def segments_srt(segments: list[Segment]) -> str:
    """SubRip subtitles: one numbered cue per segment, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, then its label."""
    return "".join(f"{i}\n{_srt_time(seg.start)} --> {_srt_time(seg.end)}\n{seg.label} ({100 * seg.score:.0f}%)\n\n"
                   for i, seg in enumerate(segments, start=1))


def _srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def plot_timeline(t: Timeline, names: list[str], path: Path) -> None:
    """Top: the probability of each leading class over time (window centres); bottom: the segments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = np.stack([w.probs for w in t.windows])
    centres = np.array([(w.start + w.end) / 2 / t.fps for w in t.windows])
    shown = [int(c) for c in np.argsort(-probs.max(axis=0))[:PLOT_CLASSES]]
    colours = {c: plt.get_cmap("tab10")(k % 10) for k, c in enumerate(shown)}
    fig, (top, band) = plt.subplots(2, 1, figsize=(8, 3.2), sharex=True, height_ratios=[3, 1])
    for c in shown:
        top.plot(centres, probs[:, c], color=colours[c], label=names[c], lw=1.5)
    top.set_ylim(0, 1.02)
    top.set_ylabel("probability")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    for seg in t.segments:
        band.axvspan(seg.start, seg.end, color=colours.get(seg.index, "0.6"), alpha=0.85)
        band.text((seg.start + seg.end) / 2, 0.5, seg.label, ha="center", va="center", fontsize=7, clip_on=True)
    band.set_yticks([])
    band.set_xlim(0, max(t.frames / t.fps, 1e-3))
    band.set_xlabel("seconds")
    fig.suptitle(f"{Path(t.source).name}: window {t.window / t.fps:.3g}s, stride {t.stride / t.fps:.3g}s"
                 + (f", smooth {t.smooth}" if t.smooth > 1 else ""), fontsize=9)
    fig.tight_layout()
    _save_atomic(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)


def _save_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def annotate_video(source: Path, segments: list[Segment], path: str | Path, fps: float) -> None:
    """``source`` again, each frame with the label of the segment it falls in drawn at the top (mp4v)."""
    from tsnctl.deploy.stream import draw_label, video_writer

    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    writer = None
    try:
        k = 0
        for index, rgb in enumerate(iter_frames(source)):
            time = (index + 0.5) / fps
            while k < len(segments) - 1 and time >= segments[k].end:
                k += 1
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            writer = writer or video_writer(tmp, fps, bgr.shape[1], bgr.shape[0])
            inside = segments and segments[k].start <= time < segments[k].end
            writer.write(draw_label(bgr, f"{segments[k].label} {100 * segments[k].score:.0f}%") if inside else bgr)
        if writer is None:
            raise UserError(f"{source}: no frames to annotate", exit_code=1)
        writer.release()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
