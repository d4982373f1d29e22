"""Classify a live or recorded stream: a webcam, a video file or an RTSP/HTTP URL read with OpenCV.

The last ``window`` frames are kept (already scaled to the model's short side); every ``stride`` frames,
once the window is full, ``num_seg`` centred segments are taken from it and scored with the model's test
crops, as ``predict`` does for a whole clip. A source that ends before the window fills still gets one
prediction over the frames it had. Optionally every frame is written to a video with the latest
prediction drawn on it. Predictions run in the reading loop: with a model slower than a live source
they fall behind real time (whether unread frames are dropped or queued depends on the camera or
stream backend); times are frames read / the source's frame rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tsnctl.data import transforms as T
from tsnctl.data.presets import eval_preset
from tsnctl.data.sampling import eval_indices
from tsnctl.deploy.predict import Predictor, topk_entries
from tsnctl.deploy.timeline import Span
from tsnctl.errors import UserError

DEFAULT_FPS = 25.0  # used for timestamps and --save-video when the source does not report a frame rate


@dataclass
class StreamPrediction:
    frame: int  # frames read so far: the prediction covers the window ending at this frame (1-based)
    time: float  # seconds into the source at that frame
    topk: list[dict]  # [{"label", "index", "prob"}, ...], most likely first


def open_source(source: str) -> tuple[cv2.VideoCapture, float]:
    """A capture for a webcam index ("0"), a video file or a URL, and its frame rate."""
    is_url = "://" in source
    if not source.isdigit() and not is_url and not Path(source).is_file():
        raise UserError(f"{source}: no such video file (a stream is a webcam index, a file or an "
                        "rtsp:// or http(s):// URL)")
    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not capture.isOpened():
        kind = "webcam" if source.isdigit() else "stream" if is_url else "video file"
        raise UserError(f"{source}: cannot open the {kind}")
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, fps if 0 < fps < 1000 else DEFAULT_FPS


def stream_predict(predictor: Predictor, source: str, window: int | Span, stride: int | Span, topk: int = 5,
                   labels: list[str] | None = None, save_video: str | Path | None = None
                   ) -> Iterator[StreamPrediction]:
    """Yield a prediction every ``stride`` frames until the source ends (or the caller stops iterating).
    ``window`` and ``stride``: frames, or a ``Span`` (frames or seconds at the source's frame rate)."""
    settings = predictor.settings
    capture, fps = open_source(source)
    window, stride = (x.frames(fps) if isinstance(x, Span) else x for x in (window, stride))
    if window < 1 or stride < 1:
        capture.release()
        raise UserError("--window and --stride must be at least 1")
    recent: deque[np.ndarray] = deque(maxlen=window)  # RGB [H', W', 3], short side = settings.short_side
    writer, latest, count = None, None, 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            count += 1
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            recent.append(T.scale(rgb[None], settings.short_side)[0])
            if count >= window and (count - window) % stride == 0:
                latest = StreamPrediction(count, count / fps, _score(predictor, recent, topk, labels))
                yield latest
            if save_video is not None:
                writer = writer or video_writer(save_video, fps, bgr.shape[1], bgr.shape[0])
                writer.write(_draw(bgr, latest))
        if count == 0:
            raise UserError(f"{source}: no frames could be read", exit_code=1)
        if latest is None:  # ended before the window filled: score what there was
            yield StreamPrediction(count, count / fps, _score(predictor, recent, topk, labels))
    finally:
        capture.release()
        if writer is not None:
            writer.release()


def _score(predictor: Predictor, recent: deque, topk: int, labels: list[str] | None) -> list[dict]:
    """Top-k of the model's test protocol over ``num_seg`` centred segments of the window."""
    s = predictor.settings
    frames = np.stack([recent[i] for i in eval_indices(len(recent), s.num_seg)])
    views = eval_preset(frames, s.short_side, s.crop_size, s.crop)  # [num_seg * crops, 3, c, c]
    logits = predictor.run(views[None])[0]
    return topk_entries(logits, labels or predictor.class_names, topk)


def video_writer(path: str | Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise UserError(f"{path}: cannot write a video here (use an .mp4 name in a writable folder)")
    return writer


def _draw(bgr: np.ndarray, prediction: StreamPrediction | None) -> np.ndarray:
    """The frame with the latest top-1 label and probability in a dark band at the top."""
    if prediction is None:
        return bgr
    best = prediction.topk[0]
    return draw_label(bgr, f"{best['label']} {100 * best['prob']:.1f}%")


def draw_label(bgr: np.ndarray, text: str) -> np.ndarray:
    """A copy of the frame with ``text`` in a dark band at the top."""
    scale = max(bgr.shape[0] / 480, 0.4)
    (_, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    out = bgr.copy()
    cv2.rectangle(out, (0, 0), (bgr.shape[1], text_h + 12), (0, 0, 0), -1)
    cv2.putText(out, text, (6, text_h + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
