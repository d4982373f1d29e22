"""Decoders: turn frame indices (0-based) into RGB uint8 frames ``[T, H, W, 3]``.

Two sources: a folder of JPEG frames (``img_00001.jpg`` is index 0), decoded with libjpeg-turbo through
simplejpeg (the same pixels as PIL and OpenCV, about 1.7x PIL's speed), and a video file (``video.py``).
Errors name the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from tsnctl.data import video
from tsnctl.data.transforms import scaled_size
from tsnctl.errors import UserError

# FFmpeg (inside OpenCV) prints its own lines such as "moov atom not found" for broken files; our
# errors already name the file and the problem, so keep its log quiet unless the user asked otherwise.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")

IndexFn = video.IndexFn


def read_frame_folder(folder: Path, indices: list[int], template: str = "img_{:05d}.jpg",
                      dct_short_side: int = 0) -> np.ndarray:
    """Read the frames at ``indices`` from a frame folder; file ``template.format(i + 1)`` is index i.
    ``dct_short_side``: see ``read_image``. Frames after the first are decoded straight into their slot of
    the clip array (no stacking copy: for 640x360 frames the copy cost a third of the decoding)."""
    if not indices:
        raise ValueError("no frame indices")
    clip: np.ndarray | None = None
    slots: dict[int, int] = {}
    for k, index in enumerate(indices):
        if index in slots:  # a short clip samples some frames twice: decode once
            clip[k] = clip[slots[index]]
            continue
        path = folder / template.format(index + 1)
        if clip is None:
            first = read_image(path, dct_short_side)
            clip = np.empty((len(indices), *first.shape), np.uint8)
            clip[k] = first
        else:
            read_image(path, dct_short_side, clip[k], folder)
        slots[index] = k
    return clip


def read_image(path: Path, dct_short_side: int = 0, out: np.ndarray | None = None,
               clip: Path | None = None) -> np.ndarray:
    """One image as RGB uint8 ``[H, W, 3]``: JPEG through simplejpeg, other formats through OpenCV.

    ``dct_short_side > 0``: a JPEG whose short side is at least twice that is decoded at a reduced scale in
    the DCT domain (libjpeg-turbo's M/8 scaling, e.g. 3x less work for 720p) and resized to exactly the size
    ``transforms.scale`` would give the full image. Not the reference's pixels (it decodes in full and
    resizes bilinearly), so it is opt-in (``data.jpeg_dct_scale``).
    ``out``: where to write the image (a frame of ``clip``, a folder whose frames must all have its size).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: frame file not found") from None
    if data[:2] == b"\xff\xd8":  # JPEG start-of-image marker
        try:
            return _fill(out, decode_jpeg(data, dct_short_side, out), clip or path)
        except ValueError:
            pass  # let OpenCV have a go at unusual JPEGs (e.g. CMYK, arithmetic coding) before giving up
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise UserError(f"{path}: not a readable image")
    return _fill(out, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), clip or path)


def decode_jpeg(data: bytes, dct_short_side: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of JPEG bytes (libjpeg-turbo); ``dct_short_side``: see ``read_image``.
    Decodes into ``out`` when its shape fits (else returns a new array). Raises ValueError for what
    libjpeg-turbo cannot decode."""
    if dct_short_side <= 0:
        if out is not None and simplejpeg.decode_jpeg_header(data)[:2] == out.shape[:2]:
            simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
            return out
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    if min(height, width) < 2 * dct_short_side:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    target = scaled_size(height, width, dct_short_side)
    # The largest reduction whose output still covers the target on both sides.
    reduced = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=target[0], min_width=target[1])
    return cv2.resize(reduced, target[::-1], interpolation=cv2.INTER_LINEAR)


def _fill(out: np.ndarray | None, image: np.ndarray, source: Path) -> np.ndarray:
    """``image``, written into ``out`` when given (unless it is already there)."""
    if out is None or image is out:
        return image
    if image.shape != out.shape:
        shapes = ", ".join(map(str, sorted({image.shape, out.shape})))
        raise UserError(f"{source}: frames differ in size ({shapes})")
    out[...] = image
    return out


def frame_glob(template: str = "img_{:05d}.jpg") -> str:
    """The glob pattern matching every frame file of ``template`` (``img_{:05d}.jpg`` -> ``img_*.jpg``)."""
    return re.sub(r"\{[^}]*\}", "*", template)


def count_folder_frames(folder: Path, template: str = "img_{:05d}.jpg") -> int:
    """Number of frames in a frame folder; their numbering must have no gap (a missing frame is an error)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: frame folder not found")
    names = {p.name for p in folder.glob(frame_glob(template))}
    if not names:
        raise UserError(f"{folder}: no frames named like {template.format(1)}")
    for index in range(1, len(names) + 1):
        if template.format(index) not in names:
            raise UserError(f"{folder / template.format(index)}: frame file not found (the folder's "
                            f"{len(names)} frames are not numbered 1..{len(names)})")
    return len(names)


def read_video(path: Path, index_fn: IndexFn, window: tuple[float, float] | None = None) -> np.ndarray:
    """Decode the frames that ``index_fn(num_frames)`` asks for from a video file, or from the time range
    ``window`` of it (see ``video.py``)."""
    return video.read_video(path, index_fn, window)


def count_video_frames(path: Path) -> int:
    """Frames of a video, counted from its packets without decoding."""
    return video.count_frames(path)


def open_video(path: Path, threads: int = 0) -> cv2.VideoCapture:
    """An OpenCV capture for sequential reading (``extract-frames``); errors name the file.

    ``threads``: FFmpeg decoding threads, 0 for FFmpeg's choice (one per core). Decoding is bit-exact
    whatever the count; one thread spends ~25% less CPU per frame, the right choice when processes
    already decode one video per core.
    """
    if not path.is_file():
        raise UserError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
    capture = cv2.VideoCapture(str(path), cv2.CAP_ANY, params)
    if not capture.isOpened():
        raise UserError(f"{path}: not a readable video (not a video, no video stream, or a truncated container)")
    return capture
