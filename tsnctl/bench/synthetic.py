"""Benchmark media: 340x256 JPEG frame folders and 10 s 340x256 H.264 clips with natural-looking content.

Smooth gradients, moving shapes and sensor-like noise give JPEG and H.264 files of realistic size
(~25 KB per frame at quality 95), unlike flat test patterns that compress to almost nothing.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np


def render_frames(num_frames: int, height: int = 256, width: int = 340, seed: int = 0) -> np.ndarray:
    """RGB uint8 ``[num_frames, height, width, 3]``: a textured background, a moving disc and a bar."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xs / width * 180 + 40, ys / height * 160 + 50, (xs + ys) / (width + height) * 120 + 60], -1)
    texture = cv2.GaussianBlur(rng.normal(0, 25, (height, width, 3)).astype(np.float32), (0, 0), 3)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        image = base + np.roll(texture, t, axis=1)
        cx, cy = int(width / 2 + width / 3 * np.sin(t / 17)), int(height / 2 + height / 4 * np.cos(t / 11))
        cv2.circle(image, (cx, cy), 30, (230, 80, 40), -1)
        cv2.rectangle(image, ((5 * t) % width, 20), ((5 * t) % width + 25, height - 20), (30, 200, 90), -1)
        image += rng.normal(0, 4, image.shape).astype(np.float32)
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def write_frame_folder(folder: Path, frames: np.ndarray, quality: int = 95) -> Path:
    """``img_00001.jpg ...`` as ``extract-frames`` (and the reference's cv2.imwrite) write them."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{i + 1:05d}.jpg"), frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return folder


def write_h264(path: Path, frames: np.ndarray, fps: int = 25) -> str:
    """An mp4 with x264's defaults (B-pyramid, keyframe every 250 frames) as Kinetics clips have; returns
    the codec used (mpeg4 when this PyAV build has no libx264)."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.max_b_frames = 2
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return codec
