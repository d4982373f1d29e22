"""Two synthetic datasets unlike the demo's, to check that a training recipe learns, not memorises one set.

``textures``: six classes told apart only by texture (stripes, checkerboard, dot grid, crosshatch, blotches,
streaks); every clip drifts in a random direction at a random speed drawn from the same range for all
classes, so motion carries no class signal. 160x120, 20-40 frames at 10 fps.

``motion``: five classes told apart only by motion (still, drift, spin, zoom, ripple) of one texture family
(smooth blotches over thin stripes, the same distribution in every class). Each frame is the mean of
sub-frames over the exposure, as a camera records it, so a single RGB frame shows the motion as blur or
distortion: the cue an RGB TSN can learn from sparse segments. Zoom runs in or out and drift and spin in
any direction within one class, so horizontal flips never change a label. 112x112, 24-36 frames at 25 fps.

Brightness, contrast, tint, scale and noise are random per clip in both, so no colour or level names a
class. Written by ``demo_data.make_demo_data(..., kind="textures" | "motion")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from tsnctl.errors import UserError

TEXTURE_CLASSES = ["stripes", "checkerboard", "dot_grid", "crosshatch", "blotches", "streaks"]
MOTION_CLASSES = ["still", "drift", "spin", "zoom", "ripple"]


def _rotated_grid(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle, so periodic patterns have no fixed orientation."""
    a = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs * math.cos(a) + ys * math.sin(a), -xs * math.sin(a) + ys * math.cos(a)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sx: float, sy: float) -> np.ndarray:
    noise = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_REFLECT)
    return np.clip((smooth - smooth.mean()) / max(float(smooth.std()), 1e-6) / 2.0, -1.0, 1.0)


def texture_pattern(cls: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A texture of class ``cls`` in [-1, 1], ``[h, w]`` float32."""
    u, v = _rotated_grid(rng, h, w)
    period = rng.uniform(7, 14)
    match cls:
        case "stripes":
            return np.where((u / period) % 1.0 < 0.5, 1.0, -1.0).astype(np.float32)
        case "checkerboard":
            return np.where(((u // period) + (v // period)) % 2 == 0, 1.0, -1.0).astype(np.float32)
        case "dot_grid":
            du, dv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
            return np.where(np.hypot(du, dv) < rng.uniform(0.2, 0.32), 1.0, -1.0).astype(np.float32)
        case "crosshatch":
            thin = rng.uniform(0.15, 0.25)
            return np.where(((u / period) % 1.0 < thin) | ((v / period) % 1.0 < thin), 1.0, -1.0).astype(np.float32)
        case "blotches":
            s = rng.uniform(3.0, 6.0)
            return _smooth_noise(rng, h, w, s, s)
        case "streaks":
            s = rng.uniform(1.5, 2.5)
            streaks = _smooth_noise(rng, h, w, s * rng.uniform(5, 8), s)
            centre = (w / 2, h / 2)
            turn = cv2.getRotationMatrix2D(centre, float(rng.uniform(0, 180)), 1.0)
            return cv2.warpAffine(streaks, turn, (w, h), borderMode=cv2.BORDER_REFLECT)
    raise UserError(f"unknown texture class {cls!r}")


def _colourise(rng: np.random.Generator, pattern: np.ndarray) -> np.ndarray:
    """Random level, contrast and weak tint: ``[h, w, 3]`` float."""
    level, contrast = rng.uniform(70, 185), rng.uniform(30, 60)
    return level + rng.uniform(-20, 20, 3) + contrast * pattern[..., None]


def _write(path: Path, frames: list[np.ndarray], rng: np.random.Generator, fps: int) -> int:
    height, width = frames[0].shape[:2]
    noise_sigma = rng.uniform(2, 8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise UserError(f"{path}: OpenCV cannot write mp4 video here", exit_code=1)
    for frame in frames:
        writer.write(np.clip(frame + rng.normal(0, noise_sigma, frame.shape), 0, 255).astype(np.uint8))
    writer.release()
    return len(frames)


def render_texture_clip(path: Path, cls: str, rng: np.random.Generator, width: int = 160, height: int = 120,
                        num_frames: int | None = None, fps: int = 10) -> int:
    """A texture of class ``cls`` drifting in a random direction (the same for all classes); frame count."""
    num_frames = num_frames or int(rng.integers(20, 41))
    speed, angle = rng.uniform(0.5, 2.5), rng.uniform(0, 2 * math.pi)
    margin = int(math.ceil(speed * num_frames)) + 2
    canvas = _colourise(rng, texture_pattern(cls, rng, height + 2 * margin, width + 2 * margin))
    x0, y0 = margin - speed * num_frames / 2 * math.cos(angle), margin - speed * num_frames / 2 * math.sin(angle)
    frames = []
    for t in range(num_frames):
        shift = np.array([[1, 0, -(x0 + speed * t * math.cos(angle))], [0, 1, -(y0 + speed * t * math.sin(angle))]])
        frames.append(cv2.warpAffine(canvas, shift, (width, height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
    return _write(path, frames, rng, fps)


def _motion(cls: str, rng: np.random.Generator, width: int, height: int) -> Callable[[float], np.ndarray]:
    """The 2x3 source-to-frame transform of class ``cls`` at time t (frames); ripple is handled apart."""
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    if cls == "drift":
        speed, angle = rng.uniform(3.0, 6.0), rng.uniform(0, 2 * math.pi)
        return lambda t: np.array([[1, 0, speed * t * math.cos(angle)], [0, 1, speed * t * math.sin(angle)]])
    if cls == "spin":
        rate = rng.choice([-1, 1]) * rng.uniform(3.0, 6.0)  # degrees per frame
        return lambda t: cv2.getRotationMatrix2D((cx, cy), rate * t, 1.0)
    if cls == "zoom":
        rate = rng.choice([-1, 1]) * rng.uniform(0.025, 0.04)  # log-scale per frame, scale 1 mid-clip
        return lambda t: cv2.getRotationMatrix2D((cx, cy), 0.0, math.exp(rate * (t - 15)))
    return lambda t: np.array([[1.0, 0, 0], [0, 1.0, 0]])  # still and ripple


def render_motion_clip(path: Path, cls: str, rng: np.random.Generator, width: int = 112, height: int = 112,
                       num_frames: int | None = None, fps: int = 25, exposure: int = 4) -> int:
    """One clip of motion class ``cls``: each frame the mean of ``exposure`` sub-frames; frame count."""
    if cls not in MOTION_CLASSES:
        raise UserError(f"unknown motion class {cls!r}")
    num_frames = num_frames or int(rng.integers(24, 37))
    pattern = 0.7 * _smooth_noise(rng, height, width, *(rng.uniform(2.0, 4.0),) * 2)
    u, _ = _rotated_grid(rng, height, width)
    pattern += 0.3 * np.where((u / rng.uniform(6, 12)) % 1.0 < 0.3, 1.0, -1.0).astype(np.float32)
    source = _colourise(rng, pattern).astype(np.float32)
    transform = _motion(cls, rng, width, height)
    amp, wavelength, omega = rng.uniform(3, 5), rng.uniform(14, 24), rng.uniform(0.6, 1.0)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t0 = rng.uniform(0, 100)
    frames = []
    for t in range(num_frames):
        frame = np.zeros_like(source)
        for k in range(exposure):
            time = t0 + t + k / exposure
            if cls == "ripple":
                map_x = xs + amp * np.sin(2 * math.pi * ys / wavelength + omega * time)
                map_y = ys + amp * np.sin(2 * math.pi * xs / wavelength + omega * time * 0.8)
                frame += cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            else:
                matrix = transform(time - t0).astype(np.float64)
                frame += cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT)
        frames.append(frame / exposure)
    return _write(path, frames, rng, fps)


KINDS: dict[str, tuple[list[str], Callable[..., int]]] = {
    "textures": (TEXTURE_CLASSES, render_texture_clip),
    "motion": (MOTION_CLASSES, render_motion_clip),
}
