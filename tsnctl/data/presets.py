"""Transform presets per mode, composed explicitly from ``transforms``.

Each takes RGB uint8 frames ``[T, H, W, 3]`` and returns a float tensor ``[T', 3, c, c]``: T' = T for
train and valid, 10*T for TenCrop, 3*T for ThreeCrop.
"""

from __future__ import annotations

import numpy as np
import torch

from tsnctl.data import transforms as T


def train_preset(frames: np.ndarray, short_side: int, crop_size: int, rng: np.random.Generator) -> torch.Tensor:
    """Scale, MultiScaleCrop, RandomFlip, Normalize."""
    frames = T.scale(frames, short_side)
    frames = T.multi_scale_crop(frames, crop_size, rng)
    frames = T.random_hflip(frames, rng)
    return T.normalize(T.to_tensor(frames))


def eval_preset(frames: np.ndarray, short_side: int, crop_size: int, crop: str = "center") -> torch.Tensor:
    """Scale, then CenterCrop (valid), ThreeCrop or TenCrop (test), Normalize."""
    frames = T.scale(frames, short_side)
    return T.normalize(T.to_tensor(crop_views(frames, crop_size, crop)))


def crop_views(frames: np.ndarray, crop_size: int, crop: str) -> np.ndarray:
    """The test-time views of a clip for ``crop`` in (center, three, ten)."""
    match crop:
        case "center":
            return T.center_crop(frames, crop_size)
        case "three":
            return T.three_crop(frames, crop_size)
        case "ten":
            return T.ten_crop(frames, crop_size)
    raise ValueError(f"unknown crop {crop!r}; choose one of center, three, ten")


VIEWS_PER_FRAME = {"center": 1, "three": 3, "ten": 10}
