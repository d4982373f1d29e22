"""The device data path (``data.decode_device=cuda``): JPEGs decoded in batches and clips cropped on the GPU.

The loader workers do the cheap part: pick the frame indices and draw every random choice from
``sample_rng(seed, epoch, index)`` in the CPU path's order (indices, MultiScaleCrop box, flip), so both paths
use the same frames, boxes and flips; then they read the JPEG files as bytes (their headers give the sizes
for the box maths). The main process decodes a whole batch of JPEGs in one ``torchvision.io.decode_jpeg``
call on the device (nvJPEG on a GPU) and applies each clip's plan there (``device_transforms``).

Video is decoded on the CPU in the workers (PyAV, frame-exact, as the CPU path): TorchCodec's NVDEC decoder
needs FFmpeg's shared libraries, which its wheel does not bundle. Only Scale, the crops and flips of video
clips move to the device. JPEGs that nvJPEG should not be trusted with (not YCbCr: grey, CMYK; frames of
different sizes; unreadable headers) are decoded on the CPU in the worker as the CPU path decodes them, and a
batch the device fails to decode is retried clip by clip, then on the CPU: a clip is reported unreadable
with the CPU path's reason or not at all.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch
from torch.utils.data import DataLoader

from tsnctl.data.dataset import BadClip, ClipSettings, SampleDataset
from tsnctl.data.decode import read_frame_folder, read_video
from tsnctl.data.device_transforms import ClipPlan, apply_plan
from tsnctl.data.lists import Sample
from tsnctl.data.sampling import frame_indices, sample_rng
from tsnctl.data.transforms import multi_scale_crop_box, scaled_size
from tsnctl.data.views import view_groups
from tsnctl.errors import UserError

log = logging.getLogger("tsnctl")


@dataclass
class EncodedClip:
    """One clip as a worker hands it over: its frames (JPEG bytes, or decoded on the CPU) and its plan."""

    index: int  # position in the list
    sample: Sample
    indices: list[int]  # the sampled frame indices, in clip order
    plan: ClipPlan
    data: torch.Tensor  # uint8: the distinct JPEG files end to end (``ends`` set), or frames [T, H, W, 3]
    ends: list[int]  # where each JPEG file ends in ``data``; empty when ``data`` holds decoded frames
    order: list[int]  # frame t of the clip is JPEG file ``order[t]``


class EncodedClipDataset(SampleDataset):
    """Yields an ``EncodedClip``, or a ``BadClip`` when the clip cannot be read (keys as ``ClipDataset``)."""

    def __getitem__(self, key: int | tuple[int, int]) -> EncodedClip | BadClip:
        epoch, index = self._key(key)
        sample = self.samples[index]
        try:
            return encode_clip(index, sample, self.settings, sample_rng(self.settings.seed, epoch, index))
        except UserError as exc:
            return BadClip(index, sample.name, str(exc))


def encode_clip(index: int, sample: Sample, settings: ClipSettings, rng: np.random.Generator) -> EncodedClip:
    """Sample the clip and draw its plan as ``dataset.load_clip`` does (same ``rng`` draws, same order)."""
    s = settings
    picked: list[int] = []

    indices = frame_indices(s.mode, s.num_seg, rng)

    def index_fn(n: int) -> list[int]:
        picked[:] = indices(n)
        return picked

    if s.fmt == "frames":
        index_fn(sample.num_frames)
        files = list(dict.fromkeys(picked))  # a short clip repeats frames: read each file once
        blobs = _jpeg_files(sample, files, s.image_template)
        if blobs is not None:
            height, width = simplejpeg.decode_jpeg_header(blobs[0])[:2]
            data = torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)
            ends = np.cumsum([len(b) for b in blobs]).tolist()
            position = {frame: k for k, frame in enumerate(files)}
            order = [position[i] for i in picked]
            return EncodedClip(index, sample, picked, plan_clip(height, width, s, rng), data, ends, order)
        frames = read_frame_folder(sample.path, picked, s.image_template)  # the CPU decoders, same errors
    else:
        frames = read_video(sample.path, index_fn, sample.window)
    return EncodedClip(index, sample, picked, plan_clip(*frames.shape[1:3], s, rng), torch.from_numpy(frames), [],
                       list(range(len(picked))))


def plan_clip(height: int, width: int, settings: ClipSettings, rng: np.random.Generator) -> ClipPlan:
    """The views of ``presets.train_preset`` / ``eval_preset`` for frames of ``height`` x ``width``."""
    s = settings
    scaled = scaled_size(height, width, s.short_side)
    if s.mode == "train":
        box = multi_scale_crop_box(*scaled, s.crop_size, rng, s.crop_scales)
        return ClipPlan(scaled, ((box, bool(rng.random() < 0.5)),), s.crop_size)  # RandomFlip, p = 0.5
    return ClipPlan(scaled, tuple(view_groups(*scaled, s.crop_size, s.crop)), s.crop_size)


def _jpeg_files(sample: Sample, files: list[int], template: str) -> list[bytes] | None:
    """The bytes of the frame files, or None when they need the CPU decoders: a file that is not a YCbCr
    JPEG (grey, CMYK, PNG, an unreadable header) or frames of different sizes (the CPU path names it)."""
    blobs, sizes = [], set()
    for i in files:
        path = sample.path / template.format(i + 1)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"{path}: frame file not found") from None
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return None
        if colorspace != "YCbCr":
            return None
        blobs.append(data)
        sizes.add((height, width))
    return blobs if len(sizes) == 1 else None


def device_batch(items: list[EncodedClip | BadClip], device: torch.device, template: str = "img_{:05d}.jpg"
                 ) -> tuple[torch.Tensor, torch.Tensor, list[BadClip]]:
    """What ``ClipDataset.load_batch`` returns, made on ``device``: uint8 clips ``[N, V, 3, c, c]`` there, labels
    ``[N]`` (CPU), and the unreadable clips. All the batch's JPEGs are decoded in one call."""
    clips = [item for item in items if not isinstance(item, BadClip)]
    decoded = iter(_decode(clips, device, template))
    good, bad = [], []
    for item in items:  # in batch order, as ClipDataset.load_batch
        result = item if isinstance(item, BadClip) else next(decoded)
        if isinstance(result, BadClip):
            bad.append(result)
        else:
            good.append((item, result))
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), bad
    views = torch.stack([apply_plan(frames, clip.plan) for clip, frames in good])
    return views, torch.tensor([clip.sample.label for clip, _ in good], dtype=torch.long), bad


def _decode(clips: list[EncodedClip], device: torch.device, template: str) -> list[torch.Tensor | BadClip]:
    """Each clip's frames as uint8 ``[T, 3, H, W]`` on ``device``, or a ``BadClip``."""
    try:
        images = _decode_jpegs([f for clip in clips for f in _files(clip)], device)
    except RuntimeError:  # one bad file fails the whole call: find it clip by clip
        return [_decode_one(clip, device, template) for clip in clips]
    out: list[torch.Tensor | BadClip] = []
    for clip in clips:
        mine, images = images[: len(clip.ends)], images[len(clip.ends) :]
        out.append(_frames(clip, mine, device))
    return out


def _decode_one(clip: EncodedClip, device: torch.device, template: str) -> torch.Tensor | BadClip:
    try:
        return _frames(clip, _decode_jpegs(_files(clip), device), device)
    except RuntimeError:
        pass
    try:  # the CPU path's decoders, so the clip is kept or reported as the CPU path would
        frames = read_frame_folder(clip.sample.path, clip.indices, template)
    except UserError as exc:
        return BadClip(clip.index, clip.sample.name, str(exc))
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2)


def _decode_jpegs(files: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg  # here: torchvision's import costs ~1.5 s elsewhere

    return decode_jpeg(files, mode=ImageReadMode.RGB, device=device) if files else []


def _files(clip: EncodedClip) -> list[torch.Tensor]:
    return [clip.data[a:b] for a, b in itertools.pairwise([0, *clip.ends])]


def _frames(clip: EncodedClip, images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not clip.ends:  # decoded on the CPU: [T, H, W, 3]
        return clip.data.to(device).permute(0, 3, 1, 2)
    return torch.stack([images[k] for k in clip.order])


def keep_list(items: list) -> list:
    """The device loader's collate: the batch's items as they are (``device_batch`` does the rest)."""
    return items


class DeviceLoader:
    """Batches of ``device_batch`` over a DataLoader of ``EncodedClipDataset`` items, with the attributes the
    training and test loops use (``dataset``, ``sampler``, ``batch_size``, ``len``)."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self.dataset = loader.dataset
        self.sampler = loader.sampler
        self.batch_size = loader.batch_size
        if self.dataset.settings.fmt == "video":
            log.info("data.decode_device: video is decoded on the CPU (PyAV) in the loader workers; Scale, "
                     "crops and flips run on %s", device)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[BadClip]]]:
        template = self.dataset.settings.image_template
        for items in self.loader:
            yield device_batch(items, self.device, template)
