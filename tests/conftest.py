"""Shared fixtures: tiny synthetic media written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parent / "data"


def write_frames(folder: Path, num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> Path:
    """A frame folder img_00001.jpg ... whose frame i has a distinct brightness (so indices are visible)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(num_frames):
        image = np.full((height, width, 3), (i * 7) % 256, np.uint8)
        image[:, : width // 2] = rng.integers(0, 256, 3, dtype=np.uint8)
        cv2.imwrite(str(folder / f"img_{i + 1:05d}.jpg"), image)
    return folder


def write_video(path: Path, num_frames: int, height: int = 48, width: int = 64) -> Path:
    """An mp4 whose frame i is filled with grey level 8*i (decodable back within codec error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width, height))
    for i in range(num_frames):
        writer.write(np.full((height, width, 3), (8 * i) % 256, np.uint8))
    writer.release()
    return path


@pytest.fixture
def example_avi() -> Path:
    return SHARED_DATA / "example.avi"
