"""Test clips that travel as frames and become views where they meet the model.

A 25x10 TenCrop clip is 25 frames of 340x256 (6.5 MB of uint8) but 250 views of 224x224 (37 MB). A loader
worker that cut the views would write, and hand over through shared memory, 5.7x more bytes than it
decoded. ``FrameViews`` keeps the batch as its frames plus the list of (box, flip) view groups, and
``views`` cuts any range of views on whatever device the frames are on (the GPU in training and testing
on one): the same pixels as ``transforms.ten_crop`` / ``three_crop``, in the same order, and a chunked
test pass (``--max-views-per-batch``) only ever cuts the views of its chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from tsnctl.data import transforms as T

ViewGroup = tuple[T.Box, bool]  # the crop box, and whether the crops are mirrored


def view_groups(height: int, width: int, crop_size: int, crop: str) -> list[ViewGroup]:
    """The view groups of a clip in output order: each group is one box applied to all T frames.

    ten: ``[p0, p0 flipped, p1, p1 flipped, ..., centre flipped]``; three: ``[start, centre, end]``;
    center: ``[centre]`` (see ``transforms``)."""
    match crop:
        case "ten":
            return [(box, flip) for box in T.ten_crop_boxes(height, width, crop_size) for flip in (False, True)]
        case "three":
            return [(box, False) for box in T.three_crop_boxes(height, width, crop_size)]
        case "center":
            return [(T.center_crop_box(height, width, crop_size), False)]
    raise ValueError(f"unknown crop {crop!r}; choose one of center, three, ten")


@dataclass(frozen=True)
class FrameViews:
    """A batch of clips as uint8 frames ``[N, T, H, W, 3]`` and the view groups cut from each clip.

    Clips whose frames differ in size share the batch too: each sits in the top-left corner of its slot
    (``H``, ``W``: the largest of the batch) and has its own groups (``groups[i]``, whose boxes stay inside
    it), so the worker never cuts views. Behaves like the uint8 clips ``[N, V, 3, c, c]`` it stands for
    where the loops need it: ``shape``, ``len``, ``to(device)``, ``pin_memory()`` (the DataLoader calls
    it), ``views(start, stop)`` and ``normalized(start, stop)``.
    """

    frames: torch.Tensor
    groups: tuple[tuple[ViewGroup, ...], ...]  # per clip

    @property
    def shape(self) -> torch.Size:
        n, t = self.frames.shape[:2]
        _, _, w, h = self.groups[0][0][0]
        return torch.Size((n, t * len(self.groups[0]), 3, h, w))

    def __len__(self) -> int:
        return self.frames.shape[0]

    def to(self, device: torch.device, non_blocking: bool = False) -> FrameViews:
        return FrameViews(self.frames.to(device, non_blocking=non_blocking), self.groups)

    def pin_memory(self) -> FrameViews:
        return FrameViews(self.frames.pin_memory(), self.groups)

    def views(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """uint8 views ``[N, stop - start, 3, c, c]`` (views ``start..stop-1`` of each clip), cut on the
        frames' device; each view keeps a ``[c, c, 3]`` memory layout, as the loader's batches do."""
        stop = self._stop(stop)
        if all(g == self.groups[0] for g in self.groups):  # one cut for the whole batch
            return _cut(self.frames, self.groups[0], start, stop).permute(0, 1, 4, 2, 3)
        clips = [_cut(self.frames[i : i + 1], g, start, stop) for i, g in enumerate(self.groups)]
        return torch.cat(clips).permute(0, 1, 4, 2, 3)

    def normalized(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """``T.normalize(self.views(start, stop))``, the same bits; on a CPU in one pass per view (crop,
        mirror and normalize into one float buffer) instead of a uint8 copy of the views and a float pass."""
        if self.frames.device.type != "cpu":
            return T.normalize(self.views(start, stop))
        stop = self._stop(stop)
        n, t = self.frames.shape[:2]
        c = self.shape[-1]
        out = T.float_buffer((n, stop - start, c, c, 3))
        frames, slots = self.frames.numpy(), out.numpy()
        mirrored = np.empty((c, c, 3), np.uint8)
        for i, groups in enumerate(self.groups):
            for v in range(start, stop):
                (x, y, w, h), flip = groups[v // t]
                pixels = frames[i, v % t, y : y + h, x : x + w]
                if flip:
                    pixels = cv2.flip(pixels, 1, dst=mirrored)
                T.normalize_into(pixels, slots[i, v - start])
        return out.permute(0, 1, 4, 2, 3)

    def _stop(self, stop: int | None) -> int:
        return self.shape[1] if stop is None else min(stop, self.shape[1])


def _cut(frames: torch.Tensor, groups: tuple[ViewGroup, ...], start: int, stop: int) -> torch.Tensor:
    """Views ``start..stop-1`` of clips ``[n, T, H, W, 3]`` that share ``groups``: ``[n, V, c, c, 3]``."""
    t = frames.shape[1]
    pieces = []
    for g in range(start // t, (stop + t - 1) // t):
        (x, y, w, h), flip = groups[g]
        first, last = max(start, g * t) - g * t, min(stop, (g + 1) * t) - g * t
        patch = frames[:, first:last, y : y + h, x : x + w]
        pieces.append(patch.flip(3) if flip else patch)
    return torch.cat(pieces, dim=1)
