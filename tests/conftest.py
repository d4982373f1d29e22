"""Shared fixtures: tiny synthetic media written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tsnctl.config import Config
from tsnctl.models.tsn import TSN
from tsnctl.weights.checkpoint import save_checkpoint

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


def write_tiny_checkpoint(path: Path, num_seg: int, crop: str, names: list[str] | None = None,
                          model: torch.nn.Module | None = None, device: str = "cpu",
                          num_workers: int | None = None) -> Path:
    """A 3-class ResNet-18 TSN checkpoint with small clips (short side 40, crop 32) and its config; ``model``
    defaults to a fresh TSN drawn from torch's current seed."""
    cfg = Config()
    cfg.model.backbone, cfg.model.num_classes = "resnet18", 3
    cfg.data.short_side, cfg.data.crop_size = 40, 32
    if num_workers is not None:
        cfg.data.num_workers = num_workers
    cfg.test.num_seg, cfg.test.crop, cfg.train.device = num_seg, crop, device
    model = model if model is not None else TSN("resnet18", 3)
    save_checkpoint(path, {"model": model.state_dict(), "epoch": 0, "config": cfg.to_dict(),
                           "class_names": names or ["a", "b", "c"]})
    return path


def write_feature_media(root: Path) -> Path:
    """Four short videos v0..v3 (12, 17, 22, 27 frames) and a 9-frame folder frames/f0: the clips of the
    features tests."""
    for i in range(4):
        write_video(root / f"v{i}.mp4", 12 + 5 * i)
    write_frames(root / "frames" / "f0", 9)
    return root


def feature_model() -> TSN:
    """A seeded ResNet-18 TSN of 5 classes whose fc gives logits of order 10, not 0.01: a real comparison."""
    torch.manual_seed(0)
    model = TSN("resnet18", 5).eval()
    torch.nn.init.normal_(model.head.fc.weight, 0.0, 1.0)
    torch.nn.init.normal_(model.head.fc.bias, 0.0, 1.0)
    return model


@pytest.fixture
def example_avi() -> Path:
    return SHARED_DATA / "example.avi"
