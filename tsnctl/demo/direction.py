"""A synthetic dataset whose classes differ only in the direction of motion, for TSN vs TSM.

Two pairs of classes: a streaky texture drifting up or down, and a blotchy texture zooming in or out.
Every clip of the second class of a pair is rendered exactly as a clip of the first and then played
backwards, so each frame, taken alone, is drawn from the same distribution in both classes: a model that
averages per-frame features (TSN) can name the pair but not the direction; only temporal order separates
them. Textures fill the frame (a network trained from scratch learns those far faster than small shapes),
are smooth (no periodic pattern that sparse segments could alias), and have random brightness, contrast,
tint, scale, speed and noise, so colour carries no class signal. The motions are vertical or radial because
training flips clips horizontally, which would swap left/right or clockwise/counter-clockwise labels.
Written by ``demo_data.make_demo_data(..., kind="direction")`` (``tsnctl demo-data OUT --kind direction``).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from tsnctl.demo.textures import write_noisy_clip

# (class, texture, motion, played backwards)
CLASSES = [
    ("drift_up", "streaks", "drift", False),
    ("drift_down", "streaks", "drift", True),
    ("zoom_in", "blotches", "zoom", False),
    ("zoom_out", "blotches", "zoom", True),
]
CLASS_NAMES = [c[0] for c in CLASSES]


def _texture(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    """Smooth random texture ``[H, W, 3]`` float: horizontal streaks or round blotches, randomly tinted."""
    noise = rng.normal(0.0, 1.0, (height, width)).astype(np.float32)
    scale = rng.uniform(4.0, 7.0)
    sigma_x, sigma_y = (scale * rng.uniform(3.0, 5.0), scale) if kind == "streaks" else (scale, scale)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y, borderType=cv2.BORDER_REFLECT)
    smooth = (smooth - smooth.mean()) / max(float(smooth.std()), 1e-6)
    level, contrast = rng.uniform(70, 185), rng.uniform(25, 55)
    tint = rng.uniform(-20, 20, 3)
    return level + tint + contrast * np.clip(smooth, -2.5, 2.5)[..., None]


def _frames(rng: np.random.Generator, texture: str, motion: str, num_frames: int, width: int,
            height: int) -> list[np.ndarray]:
    """The forward clip: content moving up (drift) or growing about a random centre (zoom)."""
    if motion == "drift":
        speed = rng.uniform(0.6, 1.5)  # pixels per frame: a few pixels between segments, under the texture scale
        source = _texture(rng, texture, height + int(math.ceil(speed * num_frames)) + 2, width)
        transforms = [np.array([[1, 0, 0], [0, 1, -speed * t]]) for t in range(num_frames)]
    else:
        source = _texture(rng, texture, height, width)
        rate = rng.uniform(0.015, 0.03)  # log-scale per frame: x1.6 to x4.1 over a clip
        cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
        transforms = []
        for t in range(num_frames):
            s = math.exp(rate * t)
            transforms.append(np.array([[s, 0, cx * (1 - s)], [0, s, cy * (1 - s)]]))
    return [cv2.warpAffine(source, m.astype(np.float64), (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT) for m in transforms]


def render_direction_clip(path: Path, cls: str, rng: np.random.Generator, width: int = 128, height: int = 96,
                          num_frames: int | None = None, fps: int = 15) -> int:
    """Render one clip of direction class ``cls`` to ``path`` (mp4); returns its frame count."""
    _, texture, motion, backwards = next(c for c in CLASSES if c[0] == cls)
    num_frames = num_frames or int(rng.integers(30, 49))
    frames = _frames(rng, texture, motion, num_frames, width, height)
    if backwards:
        frames = frames[::-1]
    return write_noisy_clip(path, frames, rng, fps)
