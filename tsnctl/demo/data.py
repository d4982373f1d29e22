"""A small synthetic action dataset rendered with OpenCV, for the demo and the tests.

Six classes differ in what moves and how: a bouncing ball, rotating stripes, rings expanding from a
point, a sliding checkerboard, a blinking grid of dots, falling rain. Brightness, tint, sizes, positions,
speeds, directions, backgrounds and noise are random per clip, so no single pixel or colour identifies a
class. Output: ``videos/<class>/*.mp4``, ``train_videos.txt`` and ``val_videos.txt`` (``<path> <label>``)
and ``labels.txt``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress

Draw = Callable[[np.ndarray, int], None]  # draws frame t onto a BGR image in place


@dataclass
class DemoSummary:
    root: Path
    train_list: Path
    val_list: Path
    label_file: Path
    classes: list[str]
    clips: int


def _bouncing_ball(rng: np.random.Generator, w: int, h: int, color: tuple) -> Draw:
    r = int(rng.integers(14, 24))
    speed, angle = rng.uniform(2, 5), rng.uniform(0, 2 * math.pi)
    state = {"x": rng.uniform(r, w - r), "y": rng.uniform(r, h - r),
             "vx": speed * math.cos(angle), "vy": speed * math.sin(angle)}

    def draw(img: np.ndarray, t: int) -> None:
        for axis, limit in (("x", w), ("y", h)):
            state[axis] += state["v" + axis]
            if not r <= state[axis] <= limit - r:
                state["v" + axis] *= -1
                state[axis] = min(max(state[axis], r), limit - r)
        cv2.circle(img, (int(state["x"]), int(state["y"])), r, color, -1, cv2.LINE_AA)
    return draw


def _rotating_stripes(rng: np.random.Generator, w: int, h: int, color: tuple) -> Draw:
    period, angle0 = rng.uniform(10, 20), rng.uniform(0, math.pi)
    omega = rng.choice([-1, 1]) * rng.uniform(0.04, 0.12)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)

    def draw(img: np.ndarray, t: int) -> None:
        a = angle0 + omega * t
        phase = (xs * math.cos(a) + ys * math.sin(a)) / period
        img[(phase % 1.0) < 0.4] = color
    return draw


def _expanding_rings(rng: np.random.Generator, w: int, h: int, color: tuple) -> Draw:
    period, speed = rng.uniform(12, 22), rng.uniform(0.8, 2.0)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    radius = np.hypot(xs - cx, ys - cy)

    def draw(img: np.ndarray, t: int) -> None:
        img[((radius - speed * t) / period % 1.0) < 0.35] = color
    return draw


def _sliding_checkerboard(rng: np.random.Generator, w: int, h: int, color: tuple) -> Draw:
    cell, speed, angle = rng.uniform(8, 16), rng.uniform(1, 3), rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)

    def draw(img: np.ndarray, t: int) -> None:
        x = (xs + speed * t * math.cos(angle)) // cell
        y = (ys + speed * t * math.sin(angle)) // cell
        img[((x + y) % 2) == 0] = color
    return draw


def _blinking_dots(rng: np.random.Generator, w: int, h: int, color: tuple) -> Draw:
    spacing = rng.uniform(14, 22)
    radius = int(spacing * rng.uniform(0.2, 0.3))
    ox, oy = rng.uniform(0, spacing), rng.uniform(0, spacing)
    period, offset = int(rng.integers(4, 8)), int(rng.integers(0, 8))
    centres = [(int(ox + i * spacing), int(oy + j * spacing))
               for i in range(int(w / spacing) + 1) for j in range(int(h / spacing) + 1)]

    def draw(img: np.ndarray, t: int) -> None:
        if (t + offset) % period < period - 1:  # on most of the time, off for one frame per period
            for centre in centres:
                cv2.circle(img, centre, radius, color, -1, cv2.LINE_AA)
    return draw


def _falling_rain(rng: np.random.Generator, w: int, h: int, color: tuple) -> Draw:
    count, length = int(rng.integers(25, 45)), rng.uniform(6, 12)
    speed, slant = rng.uniform(3, 7), rng.uniform(-0.5, 0.5)
    drops = rng.uniform(0, 1, (count, 2)) * (w, h)

    def draw(img: np.ndarray, t: int) -> None:
        for x0, y0 in drops:
            y = (y0 + speed * t) % (h + length) - length
            x = (x0 + slant * speed * t) % w
            cv2.line(img, (int(x), int(y)), (int(x + slant * length), int(y + length)), color, 2, cv2.LINE_AA)
    return draw


CLASSES: dict[str, Callable[[np.random.Generator, int, int, tuple], Draw]] = {
    "bouncing_ball": _bouncing_ball,
    "rotating_stripes": _rotating_stripes,
    "expanding_rings": _expanding_rings,
    "sliding_checkerboard": _sliding_checkerboard,
    "blinking_dots": _blinking_dots,
    "falling_rain": _falling_rain,
}


def render_clip(path: Path, cls: str, rng: np.random.Generator, width: int = 128, height: int = 96,
                num_frames: int | None = None, fps: int = 15) -> int:
    """Render one clip of class ``cls`` to ``path`` (mp4); returns its frame count."""
    num_frames = num_frames or int(rng.integers(30, 49))
    background = _background(rng, width, height)
    color = _contrasting_color(rng, background)
    draw = CLASSES[cls](rng, width, height, color)
    noise_sigma = rng.uniform(2, 10)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise UserError(f"{path}: OpenCV cannot write mp4 video here", exit_code=1)
    for t in range(num_frames):
        frame = background.copy()
        draw(frame, t)
        noise = rng.normal(0, noise_sigma, frame.shape)
        writer.write(np.clip(frame + noise, 0, 255).astype(np.uint8))
    writer.release()
    return num_frames


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random, weakly tinted grey with a weak linear gradient in a random direction."""
    base = rng.uniform(20, 235) + rng.uniform(-20, 20, 3)
    tilt = rng.uniform(-30, 30, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)).astype(np.float64)
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6) - 0.5
    return np.clip(base + tilt * ramp[..., None], 0, 255).astype(np.uint8)


def _contrasting_color(rng: np.random.Generator, background: np.ndarray) -> tuple:
    """A weakly tinted colour at least 80 grey levels brighter or darker than the background.

    Strong random hues would let a network trained from scratch on a few hundred clips memorise
    colours instead of learning shapes and motion; a random tint keeps colour uninformative.
    """
    level = float(background.mean())
    choices = [v for v in (rng.uniform(0, level - 80) if level >= 100 else None,
                           rng.uniform(level + 80, 255) if level <= 175 else None) if v is not None]
    value = choices[rng.integers(len(choices))]
    return tuple(int(np.clip(value + rng.uniform(-20, 20), 0, 255)) for _ in range(3))


def make_demo_data(out: str | Path, train_per_class: int = 30, val_per_class: int = 10, seed: int = 0,
                   progress: ProgressFn = no_progress, kind: str = "shapes") -> DemoSummary:
    """Render the demo dataset into ``out``: ``kind`` shapes (6 kinds of motion, this module) or direction
    (4 classes told apart only by the direction of motion, ``demo/direction.py``)."""
    out = Path(out)
    if train_per_class < 1 or val_per_class < 1:
        raise UserError("--train-per-class and --val-per-class must be at least 1")
    match kind:
        case "shapes":
            names, render = list(CLASSES), render_clip
        case "direction":
            from tsnctl.demo.direction import CLASS_NAMES, render_direction_clip

            names, render = list(CLASS_NAMES), render_direction_clip
        case "textures" | "motion":  # texture-only and motion-only classes (tsnctl/demo/textures.py)
            from tsnctl.demo.textures import KINDS

            names, render = KINDS[kind]
        case _:
            raise UserError(f"unknown demo data kind {kind!r}; choose one of shapes, direction, textures, motion")
    rng = np.random.default_rng(seed)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    total, done = len(names) * (train_per_class + val_per_class), 0
    for label, cls in enumerate(names):
        (out / "videos" / cls).mkdir(parents=True, exist_ok=True)
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            for i in range(count):
                rel = f"videos/{cls}/{split}_{i:03d}.mp4"
                render(out / rel, cls, rng)
                splits[split].append(f"{rel} {label}\n")
                done += 1
                progress("render demo clips", done, total, cls)
    (out / "train_videos.txt").write_text("".join(splits["train"]))
    (out / "val_videos.txt").write_text("".join(splits["val"]))
    (out / "labels.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names)))
    return DemoSummary(out, out / "train_videos.txt", out / "val_videos.txt", out / "labels.txt", names, total)
