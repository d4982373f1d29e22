"""Generators for the awkward and broken inputs of the robustness tests (tiny sizes, a few frames).

OpenCV's VideoWriter writes mp4v/MJPEG; PyAV (an FFmpeg binding) writes the other codecs, containers,
pixel formats, rotation metadata, variable frame rates and audio-only files.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from conftest import write_frames, write_video


def _frames(num: int, height: int, width: int) -> list[np.ndarray]:
    """RGB frames whose grey level rises with the index, with a bright band in the left third."""
    out = []
    for i in range(num):
        image = np.full((height, width, 3), (20 + 15 * i) % 256, np.uint8)
        image[:, : max(1, width // 3)] = 230
        out.append(image)
    return out


def write_av(path: Path, codec: str, num: int = 6, height: int = 48, width: int = 64, pix_fmt: str = "yuv420p",
             rate: int = 10, pts: list[int] | None = None, rotate: int = 0, options: dict | None = None) -> Path:
    """A video written with PyAV; ``pts`` (in 1/1000 s) gives a variable frame rate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotate:
            stream.set_display_rotation(rotate)
        for i, image in enumerate(_frames(num, height, width)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pix_fmt == "gray":
                frame = av.VideoFrame.from_ndarray(image[..., 0].copy(), format="gray")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path) -> Path:
    """An .mp4 holding only an AAC audio track (no video stream)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 0.3).astype(np.float32)[None]
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, start:start + 1024].copy(), format="fltp", layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_mjpeg_avi(path: Path, num: int = 5, height: int = 48, width: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    for image in _frames(num, height, width):
        writer.write(image)
    writer.release()
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# name -> (writer(folder) -> path, expected: "ok" or a fragment of the one-line reason)
def media_cases() -> dict:
    return {
        "empty": (lambda d: _touch(d / "empty.mp4"), "empty file"),
        "not_video": (lambda d: _text(d / "notes.mp4"), "not a readable video"),
        "truncated_mp4": (lambda d: truncate(write_video(d / "trunc.mp4", 8)), "not a readable video"),
        "truncated_mkv": (lambda d: truncate(write_av(d / "trunc.mkv", "mpeg4", 12), 0.6), "ok"),
        "audio_only": (lambda d: write_audio_only(d / "audio.mp4"), "not a readable video"),
        "one_frame": (lambda d: write_video(d / "one.mp4", 1), "ok"),
        "two_frames": (lambda d: write_video(d / "two.mp4", 2), "ok"),
        "variable_rate": (lambda d: write_av(d / "vfr.mp4", "libx264", 6, pts=[0, 40, 200, 230, 500, 900]), "ok"),
        "rotated": (lambda d: write_av(d / "rotated.mp4", "libx264", 4, rotate=90), "ok"),
        "grayscale": (lambda d: write_av(d / "gray.mkv", "ffv1", 4, pix_fmt="gray"), "ok"),
        "yuv444": (lambda d: write_av(d / "yuv444.mp4", "libx264", 4, pix_fmt="yuv444p"), "ok"),
        "odd_size": (lambda d: write_av(d / "odd.avi", "mjpeg", 4, 33, 17, pix_fmt="yuvj444p"), "ok"),
        "4k": (lambda d: write_av(d / "big.mp4", "mpeg4", 2, 2160, 3840), "ok"),
        "avi_mjpeg": (lambda d: write_mjpeg_avi(d / "clip.avi"), "ok"),
        "mkv_hevc": (lambda d: write_av(d / "clip.mkv", "libx265", 4, options={"x265-params": "log-level=none"}), "ok"),
        "webm_vp9": (lambda d: write_av(d / "clip.webm", "libvpx-vp9", 4), "ok"),
    }


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _text(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("these are notes, not a video\n" * 20)
    return path


def frame_folder_cases(root: Path) -> dict:
    """Frame folders: a good one, one with a missing JPEG in the middle, one with a corrupt JPEG."""
    good = write_frames(root / "good", 6)
    missing = write_frames(root / "missing", 6)
    (missing / "img_00003.jpg").unlink()
    corrupt = write_frames(root / "corrupt", 6)
    (corrupt / "img_00002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return {"good": (good, "ok"), "missing": (missing, "img_00003.jpg"), "corrupt": (corrupt, "img_00002.jpg")}
