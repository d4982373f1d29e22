"""Decoders: turn frame indices (0-based) into RGB uint8 frames ``[T, H, W, 3]``.

Two sources: a folder of JPEG frames (``img_00001.jpg`` is index 0) and a video file read with OpenCV,
seeking by decoding forward only as far as the last index needed. Errors name the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from tsnctl.errors import UserError

# FFmpeg (inside OpenCV) prints its own lines such as "moov atom not found" for broken files; our
# errors already name the file and the problem, so keep its log quiet unless the user asked otherwise.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")

IndexFn = Callable[[int], list[int]]  # num_frames -> the 0-based indices to read


def read_frame_folder(folder: Path, indices: list[int], template: str = "img_{:05d}.jpg") -> np.ndarray:
    """Read the frames at ``indices`` from a frame folder; file ``template.format(i + 1)`` is index i."""
    cache: dict[int, np.ndarray] = {}
    frames = []
    for index in indices:
        if index not in cache:
            cache[index] = read_image(folder / template.format(index + 1))
        frames.append(cache[index])
    return _stack(frames, folder)


def read_image(path: Path) -> np.ndarray:
    """One image as RGB uint8 ``[H, W, 3]``."""
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise UserError(f"{path}: frame file not found")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UserError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def count_folder_frames(folder: Path, template: str = "img_{:05d}.jpg") -> int:
    """Number of frames in a frame folder; their numbering must have no gap (a missing frame is an error)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: frame folder not found")
    names = {p.name for p in folder.glob(re.sub(r"\{[^}]*\}", "*", template))}
    if not names:
        raise UserError(f"{folder}: no frames named like {template.format(1)}")
    for index in range(1, len(names) + 1):
        if template.format(index) not in names:
            raise UserError(f"{folder / template.format(index)}: frame file not found (the folder's "
                            f"{len(names)} frames are not numbered 1..{len(names)})")
    return len(names)


def read_video(path: Path, index_fn: IndexFn) -> np.ndarray:
    """Decode the frames that ``index_fn(num_frames)`` asks for from a video file.

    The frame count comes from the container; when it overstates the real count (common for AVI and
    some MP4 files), the real count is measured and the indices are drawn again from it.
    """
    count = max(_header_frame_count(path), 0) or count_video_frames(path)
    frames, decoded = _decode_indices(path, index_fn(count))
    if frames is None and decoded > 0:
        frames, decoded = _decode_indices(path, index_fn(decoded))
    if frames is None:
        raise UserError(f"{path}: decoding stopped after {decoded} frames (truncated or corrupt video)")
    return frames


def count_video_frames(path: Path) -> int:
    """Count the decodable frames of a video by walking through it."""
    capture = open_video(path)
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    if count == 0:
        raise UserError(f"{path}: no decodable video frames")
    return count


def _header_frame_count(path: Path) -> int:
    capture = open_video(path)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count


def _decode_indices(path: Path, indices: list[int]) -> tuple[np.ndarray | None, int]:
    """Frames at ``indices``, or (None, frames actually decoded) when the video ends too early."""
    capture = open_video(path)
    wanted = sorted(set(indices))
    found: dict[int, np.ndarray] = {}
    position = 0
    for target in wanted:
        while position < target:
            if not capture.grab():
                capture.release()
                return None, position
            position += 1
        ok, frame = capture.read()
        if not ok:
            capture.release()
            return None, position
        position += 1
        found[target] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    capture.release()
    return _stack([found[i] for i in indices], path), position


def open_video(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise UserError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"{path}: not a readable video (not a video, no video stream, or a truncated container)")
    return capture


def _stack(frames: list[np.ndarray], source: Path) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise UserError(f"{source}: frames differ in size ({', '.join(map(str, sorted(shapes)))})")
    return np.stack(frames)
