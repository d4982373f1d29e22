"""The clip dataset: list -> sampler -> decoder -> preset, one clip per item.

Map-style with ``__len__`` so distributed samplers stay simple. Item ``i`` of epoch ``e`` is
deterministic given the seed: the sampler and the random crops draw from ``sample_rng(seed, e, i)``.
A clip that cannot be read comes back as a ``BadClip`` naming it, and ``collate_clips`` drops it from
the batch: the loops count and report bad clips, and never replace one by another clip.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from tsnctl.data.decode import read_frame_folder, read_video
from tsnctl.data.lists import Sample
from tsnctl.data.presets import eval_preset, train_preset
from tsnctl.data.sampling import eval_indices, sample_rng, train_indices
from tsnctl.errors import UserError


@dataclass(frozen=True)
class ClipSettings:
    """How a clip is read and turned into views."""

    fmt: str  # frames | video
    num_seg: int
    short_side: int
    crop_size: int
    mode: str = "test"  # train (random segments and crops) | test (centred segments, fixed crops)
    crop: str = "center"  # for test mode: center | three | ten
    image_template: str = "img_{:05d}.jpg"
    seed: int = 0


@dataclass(frozen=True)
class BadClip:
    """Stands in for a clip that could not be read, so the loop can count and report it."""

    index: int  # position in the list
    name: str  # the path as written in the list
    reason: str  # one line naming the file


class ClipDataset(Dataset):
    """Yields ``(clip, label)``: ``clip`` is uint8 ``[T', 3, crop, crop]`` (normalized per batch later),
    ``label`` an int; or a ``BadClip`` when the clip cannot be read. Keys are indices, or
    ``(epoch, index)`` pairs from ``EpochSampler``."""

    def __init__(self, samples: list[Sample], settings: ClipSettings) -> None:
        self.samples = samples
        self.settings = settings
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | BadClip:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        sample = self.samples[index]
        try:
            clip = load_clip(sample, self.settings, sample_rng(self.settings.seed, epoch, index))
        except UserError as exc:
            return BadClip(index, sample.name, str(exc))
        return clip, sample.label


def collate_clips(items: list[tuple[torch.Tensor, int] | BadClip]) -> tuple[torch.Tensor, torch.Tensor, list[BadClip]]:
    """Stack the readable clips into uint8 ``[B, T', 3, c, c]`` and labels ``[B]``; B is 0 when all are bad."""
    bad = [item for item in items if isinstance(item, BadClip)]
    good = [item for item in items if not isinstance(item, BadClip)]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), bad
    clips, labels = default_collate(good)
    return clips, labels, bad


def load_clip(sample: Sample, settings: ClipSettings, rng: np.random.Generator) -> torch.Tensor:
    """Sample, decode and transform one clip: uint8 ``[T', 3, crop, crop]``."""
    s = settings
    if s.mode == "train":
        def index_fn(n: int) -> list[int]:
            return train_indices(n, s.num_seg, rng)
    else:
        def index_fn(n: int) -> list[int]:
            return eval_indices(n, s.num_seg)

    frames = read_clip_frames(sample, s.fmt, index_fn, s.image_template)
    if s.mode == "train":
        return train_preset(frames, s.short_side, s.crop_size, rng)
    return eval_preset(frames, s.short_side, s.crop_size, s.crop)


def read_clip_frames(sample: Sample, fmt: str, index_fn: Callable[[int], list[int]],
                     template: str = "img_{:05d}.jpg") -> np.ndarray:
    """RGB uint8 ``[T, H, W, 3]``: the frames ``index_fn(num_frames)`` picks, from a frame folder
    (``fmt="frames"``, whose frame count the list gives) or a video file (counted by the decoder)."""
    if fmt == "frames":
        return read_frame_folder(sample.path, index_fn(sample.num_frames), template)
    return read_video(sample.path, index_fn)


def worker_init(_: int) -> None:
    """Keep each DataLoader worker to one OpenCV thread (the workers already run in parallel), and leave
    Ctrl-C to the main process, which finishes its step and saves a checkpoint before stopping."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
