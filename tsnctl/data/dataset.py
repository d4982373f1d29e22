"""The clip dataset: list -> sampler -> decoder -> preset, one clip per item, or a whole batch at once.

Map-style with ``__len__`` so distributed samplers stay simple. Item ``i`` of epoch ``e`` is
deterministic given the seed: the sampler and the random crops draw from ``sample_rng(seed, e, i)``.
A clip that cannot be read comes back as a ``BadClip`` naming it and is left out of its batch: the loops
count and report bad clips, and never replace one by another clip.

Loaders fetch whole batches (``__getitems__``): each clip's views are written straight into one uint8 batch
buffer, in shared memory inside a worker, so a batch is never copied on its way to the main process; workers
reuse their buffers once the main process has dropped a batch (``batch_buffers``). ThreeCrop and TenCrop
test batches hold the clips' frames instead (``views.FrameViews``): a 25x10 clip is 6.5 MB of frames but 37
MB of views, which are cut where the batch meets the model.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from tsnctl.data.batch_buffers import SentBatch, private_uint8, shared_uint8
from tsnctl.data.decode import read_frame_folder, read_video
from tsnctl.data.lists import Sample
from tsnctl.data.presets import VIEWS_PER_FRAME, eval_preset, train_preset
from tsnctl.data.sampling import eval_indices, frame_indices, sample_rng
from tsnctl.data.transforms import MULTI_SCALES, scale_into, scaled_size
from tsnctl.data.views import FrameViews, view_groups
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
    jpeg_dct_scale: bool = False  # decode large JPEG frames at a reduced scale (see decode.read_image)
    crop_scales: tuple[float, ...] = MULTI_SCALES  # train mode: MultiScaleCrop's sides per short side

    @property
    def dct_short_side(self) -> int:
        """The short side JPEG frames may be decoded at in the DCT domain (0: decode in full)."""
        return self.short_side if self.jpeg_dct_scale else 0

    @property
    def views(self) -> int:
        """Views per clip: the segments, times the crops per frame in test mode."""
        return self.num_seg * (1 if self.mode == "train" else VIEWS_PER_FRAME[self.crop])


@dataclass(frozen=True)
class BadClip:
    """Stands in for a clip that could not be read, so the loop can count and report it."""

    index: int  # position in the list
    name: str  # the path as written in the list
    reason: str  # one line naming the file


# uint8 clips [B, T', 3, c, c] (or their frames, for ThreeCrop and TenCrop), labels [B], the unreadable clips
ClipBatch = tuple[torch.Tensor | FrameViews, torch.Tensor, list[BadClip]]


class SampleDataset(Dataset):
    """A list's samples and their settings. Keys are indices, which use the epoch of ``set_epoch``, or
    ``(epoch, index)`` pairs from ``EpochSampler``."""

    def __init__(self, samples: list[Sample], settings: ClipSettings) -> None:
        self.samples = samples
        self.settings = settings
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _key(self, key: int | tuple[int, int]) -> tuple[int, int]:
        return key if isinstance(key, tuple) else (self.epoch, key)


class ClipDataset(SampleDataset):
    """Yields ``(clip, label)``: ``clip`` is uint8 ``[T', 3, crop, crop]`` (normalized per batch later),
    ``label`` an int; or a ``BadClip`` when the clip cannot be read. Loaders fetch whole batches
    (``load_batch``)."""

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | BadClip:
        epoch, index = self._key(key)
        sample = self.samples[index]
        try:
            clip = load_clip(sample, self.settings, sample_rng(self.settings.seed, epoch, index))
        except UserError as exc:
            return BadClip(index, sample.name, str(exc))
        return clip, sample.label

    def __getitems__(self, keys: list) -> ClipBatch:
        """What a DataLoader worker calls for a whole batch (see ``load_batch``); in a worker, the batch
        goes out as a ``SentBatch`` so that the main process tells when its buffer is free again."""
        if get_worker_info() is None:
            return self.load_batch(keys)
        return SentBatch(self.load_batch(keys, shared=True))

    def load_batch(self, keys: list, shared: bool = False) -> ClipBatch:
        """The readable clips of ``keys`` as uint8 ``[B, T', 3, c, c]``, their labels ``[B]`` and the clips
        that could not be read (B is 0 when all are bad). Each clip's views are written into its slot of
        one buffer, in shared memory when ``shared`` (the buffer then crosses to the main process as is).
        """
        s = self.settings
        if s.mode == "test" and s.crop != "center":  # more views than frames: send the frames
            return self._load_frame_batch(keys, shared)
        buffer = _uint8_buffer((len(keys), s.views, s.crop_size, s.crop_size, 3), shared)
        slots = buffer.numpy()
        labels, bad = [], []
        for key in keys:
            epoch, index = self._key(key)
            sample = self.samples[index]
            try:
                load_clip(sample, s, sample_rng(s.seed, epoch, index), out=slots[len(labels)])
            except UserError as exc:
                bad.append(BadClip(index, sample.name, str(exc)))
                continue
            labels.append(sample.label)
        clips = buffer[: len(labels)].permute(0, 1, 4, 2, 3)  # [B, T', 3, c, c], each frame still [c, c, 3] in memory
        return clips, torch.tensor(labels, dtype=torch.long), bad

    def _load_frame_batch(self, keys: list, shared: bool) -> ClipBatch:
        """Test clips as their scaled frames and view groups (``FrameViews``). Clips of different frame
        sizes share the buffer, each in the corner of a slot the size of the largest; each is scaled
        straight into its slot."""
        s = self.settings
        decoded, labels, bad = [], [], []
        for key in keys:
            index = self._key(key)[1]
            sample = self.samples[index]
            try:
                decoded.append(read_clip_frames(sample, s.fmt, lambda n: eval_indices(n, s.num_seg),
                                                s.image_template, s.dct_short_side))
            except UserError as exc:
                bad.append(BadClip(index, sample.name, str(exc)))
                continue
            labels.append(sample.label)
        labels = torch.tensor(labels, dtype=torch.long)
        if not decoded:
            return _uint8_buffer((0, s.views, s.crop_size, s.crop_size, 3), False).permute(0, 1, 4, 2, 3), labels, bad
        sizes = [scaled_size(*clip.shape[1:3], s.short_side) for clip in decoded]
        height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
        buffer = _uint8_buffer((len(decoded), s.num_seg, height, width, 3), shared)
        for clip, (h, w), slot in zip(decoded, sizes, buffer.numpy(), strict=True):
            scale_into(clip, slot[:, :h, :w])
        groups = tuple(tuple(view_groups(h, w, s.crop_size, s.crop)) for h, w in sizes)
        return FrameViews(buffer, groups), labels, bad


def keep_batch(batch: ClipBatch) -> ClipBatch:
    """The DataLoader's ``collate_fn``: ``ClipDataset.__getitems__`` already built the batch."""
    return batch


def _uint8_buffer(shape: tuple[int, ...], shared: bool) -> torch.Tensor:
    """The batch buffer, in memory reused across batches (``batch_buffers``): shared memory in a worker (the
    batch then crosses to the main process as a handle instead of a copy), else private."""
    return shared_uint8(shape) if shared else private_uint8(shape)


def load_clip(sample: Sample, settings: ClipSettings, rng: np.random.Generator,
              out: np.ndarray | None = None) -> torch.Tensor:
    """Sample, decode and transform one clip: uint8 ``[T', 3, crop, crop]``, written into ``out``
    (``[T', crop, crop, 3]`` uint8) when given."""
    s = settings
    frames = read_clip_frames(sample, s.fmt, frame_indices(s.mode, s.num_seg, rng), s.image_template, s.dct_short_side)
    if s.mode == "train":
        return train_preset(frames, s.short_side, s.crop_size, rng, out, s.crop_scales)
    return eval_preset(frames, s.short_side, s.crop_size, s.crop, out)


def read_clip_frames(sample: Sample, fmt: str, index_fn: Callable[[int], list[int]],
                     template: str = "img_{:05d}.jpg", dct_short_side: int = 0) -> np.ndarray:
    """RGB uint8 ``[T, H, W, 3]``: the frames ``index_fn(num_frames)`` picks, from a frame folder
    (``fmt="frames"``, whose frame count the list gives; ``dct_short_side``: see ``decode.read_image``) or a
    video file (counted by the decoder)."""
    if fmt == "frames":
        return read_frame_folder(sample.path, index_fn(sample.num_frames), template, dct_short_side)
    return read_video(sample.path, index_fn, sample.window)


def worker_init(_: int) -> None:
    """Keep each DataLoader worker to one OpenCV thread (the workers already run in parallel), and leave
    Ctrl-C to the main process, which finishes its step and saves a checkpoint before stopping."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
