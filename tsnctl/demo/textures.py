"""Two synthetic datasets unlike the demo's, to check that a training recipe learns, not memorises one set.

``textures``: six classes told apart only by texture (stripes, checkerboard, dot grid, crosshatch, blotches,
streaks); every clip drifts in a random direction at a random speed drawn from the same range for all
classes, so motion carries no class signal. 160x120, 20-40 frames at 10 fps.

``motion``: five classes told apart only by motion (still, drift, spin, zoom, ripple) of one texture family
(sharp-edged blobs over fine grain, tiling seamlessly, the same distribution in every class). Each frame is
the mean of sub-frames over the whole frame interval, as a camera with an open shutter records it, so a
single RGB frame shows the motion as streaks (drift: parallel, spin: circular, zoom: radial, ripple: wavy)
that stay several pixels long after the demo's resize to 64 pixels: the only motion a frame-level TSN sees.
Zoom runs in and out at a constant rate, drift and spin run in any direction within one class, so
horizontal flips never change a label. 112x112, 24-36 frames at 25 fps.

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


def write_noisy_clip(path: Path, frames: list[np.ndarray], rng: np.random.Generator, fps: int) -> int:
    """Write ``frames`` as mp4 with Gaussian noise of a random strength (drawn from ``rng``); frame count."""
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
    return write_noisy_clip(path, frames, rng, fps)


def _periodic_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Smooth noise that tiles seamlessly (filtered in the Fourier domain), in about [-1, 1]."""
    freq = np.fft.fftfreq(size)
    gain = np.exp(-2 * (math.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    smooth = np.fft.ifft2(np.fft.fft2(rng.normal(0.0, 1.0, (size, size))) * gain).real.astype(np.float32)
    return np.clip((smooth - smooth.mean()) / max(float(smooth.std()), 1e-6) / 2.0, -1.0, 1.0)


def _triangle(t: float, period: float) -> float:
    """A triangle wave in [-1, 1]: constant speed, turning at the ends."""
    x = (t / period) % 1.0
    return 4 * x - 1 if x < 0.5 else 3 - 4 * x


def _motion(cls: str, rng: np.random.Generator, centre: tuple[float, float]) -> Callable[[float], np.ndarray]:
    """The 2x3 frame-from-source transform of class ``cls`` at time t (frames; 0 mid-clip); ripple apart.
    Speeds give streaks of ~7-14 source pixels per exposure, still visible after the demo's resize to 64."""
    if cls == "drift":
        speed, angle = rng.uniform(8.0, 14.0), rng.uniform(0, 2 * math.pi)
        return lambda t: np.array([[1, 0, speed * t * math.cos(angle)], [0, 1, speed * t * math.sin(angle)]])
    if cls == "spin":
        rate = rng.choice([-1, 1]) * rng.uniform(10.0, 16.0)  # degrees per frame: ~7-11 px at radius 40
        return lambda t: cv2.getRotationMatrix2D(centre, rate * t, 1.0)
    if cls == "zoom":  # in and out at a constant log-rate of 0.15-0.25 per frame (a triangle wave), bounded scale
        amp, rate, phase = rng.uniform(0.5, 0.7), rng.uniform(0.15, 0.25), rng.uniform(0, 1)
        period = 4 * amp / rate
        return lambda t: cv2.getRotationMatrix2D(centre, 0.0, math.exp(amp * _triangle(t + phase * period, period)))
    return lambda t: np.array([[1.0, 0, 0], [0, 1.0, 0]])  # still and ripple


def _motion_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sharp-edged blobs over fine grain, tiling seamlessly: edges that show blur; one family for all classes."""
    blobs = np.tanh(6.0 * _periodic_noise(rng, size, rng.uniform(2.5, 4.5)))
    grain = _periodic_noise(rng, size, rng.uniform(0.8, 1.2))
    return (0.7 * blobs + 0.3 * grain).astype(np.float32)


def render_motion_clip(path: Path, cls: str, rng: np.random.Generator, width: int = 112, height: int = 112,
                       num_frames: int | None = None, fps: int = 25, exposure: int = 10) -> int:
    """One clip of motion class ``cls``: each frame the mean of ``exposure`` sub-frames over one frame
    interval (an open shutter); the texture tiles seamlessly (warps wrap around), so no border or seam marks
    a class."""
    if cls not in MOTION_CLASSES:
        raise UserError(f"unknown motion class {cls!r}")
    num_frames = num_frames or int(rng.integers(24, 37))
    size = 2 * max(width, height)
    source = _colourise(rng, _motion_texture(rng, size)).astype(np.float32)
    centre = (size / 2 + rng.uniform(-0.2, 0.2) * width, size / 2 + rng.uniform(-0.2, 0.2) * height)
    transform = _motion(cls, rng, centre)
    amp, wavelength, omega = rng.uniform(4, 6), rng.uniform(20, 32), rng.uniform(1.2, 1.8)  # ripple: 5-11 px/frame
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    x0, y0, phase = (size - width) / 2, (size - height) / 2, rng.uniform(0, 2 * math.pi)
    frames = []
    for t in range(num_frames):
        frame = np.zeros((height, width, 3), np.float32)
        for k in range(exposure):
            time = t + k / exposure - num_frames / 2
            if cls == "ripple":
                map_x = x0 + xs + amp * np.sin(2 * math.pi * ys / wavelength + omega * time + phase)
                map_y = y0 + ys + amp * np.sin(2 * math.pi * xs / wavelength + 0.8 * omega * time + phase)
                frame += cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
            else:
                # source -> frame: the class's motion about the source centre, then the centred window
                matrix = transform(time).astype(np.float64)
                matrix[:, 2] -= (x0, y0)
                frame += cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_WRAP)
        frames.append(frame / exposure)
    return write_noisy_clip(path, frames, rng, fps)


KINDS: dict[str, tuple[list[str], Callable[..., int]]] = {
    "textures": (TEXTURE_CLASSES, render_texture_clip),
    "motion": (MOTION_CLASSES, render_motion_clip),
}
