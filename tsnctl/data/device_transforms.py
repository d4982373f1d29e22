"""The clip transforms of ``transforms.py`` as torch ops, for frames already on a device (GPU or CPU).

Frames are uint8 ``[T, 3, H, W]`` tensors. Crops and flips stay on uint8; a resize computes in float32 and
rounds back to uint8, as OpenCV's does on the CPU path, so each step sees the same kind of input there and
here. Where the boxes, flips and view order come from is ``ClipPlan``: drawn in the loader workers exactly as
the CPU presets draw them (``device_path.plan_clip``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tsnctl.data.transforms import Box


@dataclass(frozen=True)
class ClipPlan:
    """How one clip becomes its views: Scale to ``scaled``, then one ``(box, flip)`` per view (boxes on
    the scaled frames, in the CPU preset's view order), each view resized to ``size`` x ``size`` if its box
    is not that already (MultiScaleCrop)."""

    scaled: tuple[int, int]  # (height, width) after Scale
    views: tuple[tuple[Box, bool], ...]  # (x, y, w, h) box and whether the view is mirrored
    size: int  # crop side of every view


def resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of uint8 ``[T, 3, H, W]`` to ``[T, 3, height, width]``.

    Pixel-centre aligned and without antialiasing, like ``cv2.INTER_LINEAR`` on the CPU path; OpenCV
    rounds in fixed point, this in float32, so about one pixel value in eight differs by 1 level.
    """
    out = F.interpolate(frames.float(), size=(height, width), mode="bilinear", align_corners=False,
                        antialias=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def crop(frames: torch.Tensor, box: Box) -> torch.Tensor:
    """``[T, 3, H, W] -> [T, 3, h, w]`` at ``box = (x, y, w, h)`` (a view, no copy)."""
    x, y, w, h = box
    return frames[:, :, y : y + h, x : x + w]


def apply_plan(frames: torch.Tensor, plan: ClipPlan) -> torch.Tensor:
    """uint8 ``[T, 3, H, W]`` -> uint8 ``[V*T, 3, size, size]``: view after view, T frames each (so TenCrop
    is ``[p0 x T, p0 flipped x T, p1 x T, ...]`` as ``transforms.ten_crop``)."""
    if tuple(frames.shape[-2:]) != plan.scaled:  # Scale leaves frames whose short side fits untouched
        frames = resize(frames, *plan.scaled)
    views = []
    for box, flip in plan.views:
        view = crop(frames, box)
        if tuple(view.shape[-2:]) != (plan.size, plan.size):
            view = resize(view, plan.size, plan.size)
        views.append(view.flip(-1) if flip else view)
    return torch.cat(views)
