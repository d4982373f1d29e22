"""Score a long video window by window and merge the windows into labelled segments (``predict --timeline``).

Windows: ``window`` frames long, one every ``stride`` frames from frame 0 (``--window 2s --stride 0.5s``
become frames at the video's rate); only whole windows are scored, and a video shorter than one window is
scored as one window. Each window is scored as ``test`` scores a clip of exactly those frames: ``num_seg``
centred segments, the test crops, features averaged over the views, softmax. Frames are decoded as they come
and only those some pending window samples are kept (scaled to the model's short side), so memory stays flat
on an hour of video.

Segments: the window probabilities are optionally smoothed (moving average over ``smooth`` windows), each
window takes its most likely class, and runs of windows with the same class become one segment. Time
convention: window ``i`` stands for the interval of one stride around its centre (the first one from 0, the
last one to the end of the video), so a segment runs from halfway between its first window's centre and
the previous window's to halfway between its last window's centre and the next one's; a change of action
is placed within half a stride of where the windows' majority changes. A segment's score is the mean
(smoothed) probability of its class over its windows; segments scoring below ``threshold`` are dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tsnctl.data import transforms as T
from tsnctl.data.presets import eval_preset
from tsnctl.data.sampling import eval_indices
from tsnctl.deploy.predict import Predictor
from tsnctl.errors import UserError

_SPAN = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(s|ms|f)?")


@dataclass(frozen=True)
class Span:
    """A window or stride length as given: a frame count (``16``, ``16f``) or seconds (``2s``, ``500ms``)."""

    value: float
    seconds: bool

    def frames(self, fps: float) -> int:
        """Whole frames at ``fps`` (at least one)."""
        return max(1, round(self.value * fps)) if self.seconds else int(self.value)


def parse_span(text: str, option: str) -> Span:
    """``"16"`` or ``"16f"`` -> 16 frames; ``"2s"``, ``"0.5s"``, ``"500ms"`` -> seconds; else a UserError."""
    match = _SPAN.fullmatch(text.strip().lower())
    if match is None:
        raise UserError(f"{option} {text!r}: expected frames (16) or seconds (2s, 0.5s, 500ms)")
    number, unit = match.groups()
    value = float(number)
    if unit in (None, "f") and not value.is_integer():
        raise UserError(f"{option} {text!r}: a frame count is a whole number (add 's' for seconds)")
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{option} {text!r}: must be more than 0")
    return Span(value / 1000 if unit == "ms" else value, unit in ("s", "ms"))


@dataclass
class WindowScore:
    start: int  # first frame (0-based)
    end: int  # one past the last frame
    probs: np.ndarray  # softmax over the classes [C], float64


def score_windows(predictor: Predictor, frames: Iterable[np.ndarray], window: int, stride: int
                  ) -> Iterator[WindowScore]:
    """Yield each whole window of ``frames`` (RGB uint8 ``[H, W, 3]``, in order) as soon as its last frame
    is read; a source shorter than one window yields one window over all its frames."""
    if window < 1 or stride < 1:
        raise UserError("--window and --stride must be at least one frame")
    s = predictor.settings
    offsets = eval_indices(window, s.num_seg)
    wanted = set(offsets)
    held: dict[int, np.ndarray] = {}  # frame index -> frame scaled to the short side
    start, count = 0, 0  # the next window to score starts at frame `start`
    for index, frame in enumerate(frames):
        count = index + 1
        # a frame some pending window samples; the first window's frames too (in case the source is shorter)
        if index < window or any(index - b in wanted for b in range(start, index + 1, stride)):
            held[index] = T.scale(frame[None], s.short_side)[0]
        while start + window <= count:
            yield WindowScore(start, start + window, _probs(predictor, [held[start + o] for o in offsets]))
            start += stride
            for old in [k for k in held if k < start]:
                del held[old]
    if count == 0:
        raise UserError("the video holds no frames that could be decoded", exit_code=1)
    if count < window:
        yield WindowScore(0, count, _probs(predictor, [held[i] for i in eval_indices(count, s.num_seg)]))


def _probs(predictor: Predictor, frames: list[np.ndarray]) -> np.ndarray:
    """Softmax of the model's test protocol over these ``num_seg`` frames."""
    s = predictor.settings
    views = eval_preset(np.stack(frames), s.short_side, s.crop_size, s.crop)  # [num_seg * crops, 3, c, c]
    logits = predictor.run(views[None])[0]
    return torch.softmax(torch.from_numpy(np.asarray(logits)).double(), dim=0).numpy()


def collect_windows(windows: Iterator[WindowScore], on_window: Callable[[WindowScore], None] | None = None,
                    stop_on_interrupt: bool = False) -> list[WindowScore]:
    """Every window of ``windows``; with ``stop_on_interrupt`` (a live stream) Ctrl-C ends the source and
    keeps the windows scored so far."""
    scored: list[WindowScore] = []
    try:
        for w in windows:
            scored.append(w)
            if on_window is not None:
                on_window(w)
    except KeyboardInterrupt:
        if not stop_on_interrupt:
            raise
    return scored


@dataclass
class Segment:
    start: float  # seconds
    end: float  # seconds
    label: str
    index: int  # class index
    score: float  # mean probability of the class over the segment's windows


def smooth_probs(probs: np.ndarray, k: int) -> np.ndarray:
    """Moving average of ``[N, C]`` over ``k`` windows centred on each (fewer at the ends)."""
    if k < 1:
        raise UserError(f"--smooth {k}: must be at least 1 (1: no smoothing)")
    if k == 1 or len(probs) < 2:
        return probs
    before, after = (k - 1) // 2, k // 2
    sums = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0)])
    n = len(probs)
    lo = np.clip(np.arange(n) - before, 0, n)
    hi = np.clip(np.arange(n) + after + 1, 0, n)
    return (sums[hi] - sums[lo]) / (hi - lo)[:, None]


def window_bounds(windows: list[WindowScore], fps: float, duration: float) -> np.ndarray:
    """``[N, 2]`` seconds each window stands for: halfway to its neighbours' centres, the first from 0, the
    last to ``duration`` (see the module doc)."""
    centres = np.array([(w.start + w.end) / 2 / fps for w in windows])
    mids = (centres[1:] + centres[:-1]) / 2
    return np.stack([np.concatenate([[0.0], mids]), np.concatenate([mids, [duration]])], axis=1)


def merge_segments(windows: list[WindowScore], fps: float, duration: float, names: list[str], smooth: int = 1,
                   threshold: float = 0.0) -> list[Segment]:
    """Runs of windows with the same most likely (smoothed) class, as timed segments; see the module doc."""
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold}: must be a probability between 0 and 1")
    if not windows:
        return []
    probs = smooth_probs(np.stack([w.probs for w in windows]), smooth)
    if len(names) != probs.shape[1]:
        raise UserError(f"{len(names)} class names given for a model with {probs.shape[1]} classes")
    bounds = window_bounds(windows, fps, duration)
    best = probs.argmax(axis=1)
    segments = []
    first = 0
    for i in range(1, len(windows) + 1):
        if i < len(windows) and best[i] == best[first]:
            continue
        c = int(best[first])
        score = float(probs[first:i, c].mean())
        if score >= threshold:
            segments.append(Segment(round(float(bounds[first, 0]), 3), round(float(bounds[i - 1, 1]), 3), names[c],
                                    c, round(score, 4)))
        first = i
    return segments
