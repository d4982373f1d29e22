"""Build DataLoaders, class names and the device from a config."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from tsnctl.config import Config
from tsnctl.data.dataset import ClipDataset, ClipSettings, keep_batch, worker_init
from tsnctl.data.device_path import DeviceLoader, EncodedClipDataset, keep_list
from tsnctl.data.lists import Sample, read_labels, read_list
from tsnctl.data.transforms import normalize
from tsnctl.data.views import FrameViews
from tsnctl.engine.ranks import rank, world_size
from tsnctl.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA device that is missing is an error.

    In a process group on GPUs, ``auto`` and ``cuda`` mean this rank's GPU (set when the group started).
    """
    if name in ("auto", "cuda") and torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise UserError(f"device {name}: no CUDA GPU is available on this machine")
        if device.index is not None and device.index >= count:
            raise UserError(f"device {name}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    return device


def class_names(cfg: Config) -> list[str]:
    """Names from ``data.label_file`` when set (their count must match the model), else class_0..."""
    if not cfg.data.label_file:
        return [f"class_{i}" for i in range(cfg.model.num_classes)]
    names = read_labels(cfg.data.label_file)
    if len(names) != cfg.model.num_classes:
        raise UserError(f"{cfg.data.label_file}: {len(names)} class names, but model.num_classes is "
                        f"{cfg.model.num_classes}")
    return names


def read_split(cfg: Config, list_file: str, split: str) -> list[Sample]:
    if not list_file:
        raise UserError(f"config: data.{split}_list is not set")
    return read_list(list_file, cfg.data.format, cfg.data.root, cfg.model.num_classes)


def default_num_workers() -> int:
    """Loader workers sized to the machine: the CPU cores per GPU, less one for the process that feeds it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(16, cores // max(1, torch.cuda.device_count()) - 1))


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys for ``ClipDataset``, optionally starting part-way through the epoch.

    Workers kept alive across epochs (``persistent_workers``) hold their own copy of the dataset, which
    never sees ``set_epoch``; passing the epoch with each index keeps every clip's random draws a function
    of (seed, epoch, index) however the workers live. A run resumed after step ``s`` skips the first
    ``start = s * batch`` indices of this rank's order: the clips the interrupted run already trained on.
    """

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use epoch ``epoch``'s order and skip its first ``start`` indices (already trained on)."""
        self.epoch, self.start = epoch, start
        if hasattr(self.inner, "set_epoch"):  # DistributedSampler: the shuffle order of this epoch
            self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in itertools.islice(self.inner, self.start, None))

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.start)


def resolve_decode_device(name: str, device: torch.device) -> torch.device | None:
    """Where batches are decoded and cropped for ``data.decode_device=name``: None for the CPU loader workers,
    else the run's GPU ``device``."""
    if name == "cpu":
        return None
    if device.type != "cuda":
        raise UserError(f"data.decode_device is {name}, but this run's device is {device} (no CUDA GPU, or "
                        "train.device=cpu); set data.decode_device=cpu")
    return device


def clip_loader(samples: list[Sample], settings: ClipSettings, batch_size: int, num_workers: int,
                shuffle: bool = False, seed: int = 0, decode_device: torch.device | None = None,
                sampler: Sampler | None = None) -> DataLoader | DeviceLoader:
    """A DataLoader of ``(clips, labels, bad_clips)`` batches over this rank's clips (``ClipDataset.load_batch``):
    uint8 ``[N, T', 3, H, W]`` (normalize with ``model_input``), int labels ``[N]``, unreadable clips.

    Training shuffles and drops the last incomplete batch, as the reference: one permutation per
    (seed, epoch), set with ``set_loader_epoch``, dealt round-robin to the ranks, so W ranks x batch B see
    the same clips per step as 1 process x batch W*B. Evaluation keeps every clip exactly once, in list
    order (rank r of W gets clips r, r+W, ...).

    ``num_workers < 0`` sizes the worker pool to the machine. Workers persist across epochs and prefetch
    four batches each; batches land in pinned memory when a GPU is present. ``sampler`` (training only)
    replaces the shuffle with another order of this rank's indices, with the same ``set_epoch``
    (``engine/finetune.BalancedSampler``). With ``decode_device`` the
    workers only sample and read, and the same batches (clips on that device) come out of a
    ``DeviceLoader`` (see ``data/device_path.py``).
    """
    on_device = decode_device is not None
    dataset = EncodedClipDataset(samples, settings) if on_device else ClipDataset(samples, settings)
    if shuffle and sampler is not None:
        inner: Sampler = sampler
    elif shuffle:
        inner = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True,
                                            seed=seed, drop_last=True)
    else:
        inner = ShardSampler(len(dataset), rank(), world_size())
    workers = default_num_workers() if num_workers < 0 else num_workers
    extra = {"persistent_workers": True, "prefetch_factor": 4} if workers > 0 else {}
    # The loader's own generator (only used to seed workers) keeps it from drawing on the global torch
    # RNG at each epoch, which would make a resumed run's dropout differ from an uninterrupted one.
    loader = DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(inner), num_workers=workers,
                        drop_last=shuffle, pin_memory=torch.cuda.is_available() and not on_device,
                        worker_init_fn=worker_init, collate_fn=keep_list if on_device else keep_batch,
                        generator=torch.Generator(), **extra)
    return DeviceLoader(loader, decode_device) if on_device else loader


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, ...`` of ``0..n-1``: every index on exactly one rank, no padding."""

    def __init__(self, n: int, rank: int = 0, num_replicas: int = 1) -> None:
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def set_loader_epoch(loader: DataLoader | DeviceLoader, epoch: int, start_step: int = 0) -> None:
    """Make the next pass over ``loader`` draw epoch ``epoch``'s order and random segments and crops,
    beginning after its first ``start_step`` batches (a mid-epoch resume)."""
    loader.dataset.set_epoch(epoch)
    loader.sampler.set_epoch(epoch, start_step * loader.batch_size)


def model_input(clips: torch.Tensor | FrameViews, device: torch.device) -> torch.Tensor:
    """uint8 ``[N, V, 3, H, W]`` from a loader -> normalized float32 on ``device``.

    The one float conversion of the data path, per batch and on the GPU when there is one: moving uint8
    is 4x less traffic than float32. A TenCrop/ThreeCrop batch moves as frames and its views are cut on
    ``device`` (on a CPU, cut and normalized in one pass: ``FrameViews.normalized``).
    """
    clips = clips.to(device, non_blocking=True)
    return clips.normalized() if isinstance(clips, FrameViews) else normalize(clips)
