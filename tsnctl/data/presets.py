"""Transform presets per mode, composed explicitly from ``transforms``.

Each takes RGB uint8 frames ``[T, H, W, 3]`` and returns a uint8 tensor ``[T', 3, c, c]``: T' = T for
train and valid, 10*T for TenCrop, 3*T for ThreeCrop. Normalization is not part of a preset: it runs once
per batch where the batch meets the model (``transforms.normalize``, on the GPU when there is one), so
clips cross process boundaries as uint8 (37 MB for 250 views of 224x224) instead of float32 (150 MB). The
loaders go further for TenCrop and ThreeCrop and send the frames (``views.FrameViews``); the presets here
serve single clips (``predict``) and batches whose frames differ in size.
"""

from __future__ import annotations

import numpy as np
import torch

from tsnctl.data import transforms as T


def train_preset(frames: np.ndarray, short_side: int, crop_size: int, rng: np.random.Generator,
                 out: np.ndarray | None = None, scales: tuple[float, ...] = T.MULTI_SCALES) -> torch.Tensor:
    """Scale, MultiScaleCrop, RandomFlip (uint8 out; normalize the batch later). ``out``: where to write
    the views, ``[T, c, c, 3]`` uint8 (a slot of a batch buffer)."""
    frames = T.scale(frames, short_side)
    frames = T.multi_scale_crop(frames, crop_size, rng, out, scales)
    frames = T.random_hflip(frames, rng, in_place=True)  # the resized crops are ours to overwrite
    return T.to_tensor(frames)


def eval_preset(frames: np.ndarray, short_side: int, crop_size: int, crop: str = "center",
                out: np.ndarray | None = None) -> torch.Tensor:
    """Scale, then CenterCrop (valid), ThreeCrop or TenCrop (test) (uint8 out; normalize the batch later).
    ``out``: where to write the views, ``[T', c, c, 3]`` uint8."""
    frames = T.scale(frames, short_side)
    return T.to_tensor(crop_views(frames, crop_size, crop, out))


def crop_views(frames: np.ndarray, crop_size: int, crop: str, out: np.ndarray | None = None) -> np.ndarray:
    """The test-time views of a clip for ``crop`` in (center, three, ten), into ``out`` when given."""
    match crop:
        case "center":
            return T.center_crop(frames, crop_size, out)
        case "three":
            return T.three_crop(frames, crop_size, out)
        case "ten":
            return T.ten_crop(frames, crop_size, out)
    raise ValueError(f"unknown crop {crop!r}; choose one of center, three, ten")


VIEWS_PER_FRAME = {"center": 1, "three": 3, "ten": 10}
