"""Build DataLoaders, class names and the device from a config."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from tsnctl.config import Config
from tsnctl.data.dataset import ClipDataset, ClipSettings, worker_init
from tsnctl.data.lists import Sample, read_labels, read_list
from tsnctl.engine.distributed import rank, world_size
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


def clip_loader(samples: list[Sample], settings: ClipSettings, batch_size: int, num_workers: int,
                shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader over this rank's clips. Training shuffles and drops the last incomplete batch, as the
    reference; evaluation keeps every clip exactly once, in list order (rank r of W gets clips r, r+W, ...).

    Training order: one permutation per (seed, epoch), set with ``loader.sampler.set_epoch(epoch)``, dealt
    round-robin to the ranks, so W ranks x batch B see the same clips per step as 1 process x batch W*B.
    """
    dataset = ClipDataset(samples, settings)
    if shuffle:
        sampler: Sampler = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True,
                                              seed=seed, drop_last=True)
    else:
        sampler = ShardSampler(len(dataset), rank(), world_size())
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=shuffle, pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, ...`` of ``0..n-1``: every index on exactly one rank, no padding."""

    def __init__(self, n: int, rank: int = 0, num_replicas: int = 1) -> None:
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
