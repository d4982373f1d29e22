"""Build DataLoaders, class names and the device from a config."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler, SequentialSampler

from tsnctl.config import Config
from tsnctl.data.dataset import ClipDataset, ClipSettings, collate_clips, worker_init
from tsnctl.data.lists import Sample, read_labels, read_list
from tsnctl.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA device that is missing is an error."""
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
                sampler: Sampler[int] | None = None) -> DataLoader:
    """A DataLoader of ``(clips, labels, bad_clips)`` batches (see ``collate_clips``).

    Training passes its shuffling sampler and drops the last incomplete batch, as the reference;
    evaluation keeps every clip exactly once, in list order.
    """
    dataset = ClipDataset(samples, settings)
    training = sampler is not None
    # The loader's own generator (only used to seed workers) keeps it from drawing on the global torch
    # RNG at each epoch, which would make a resumed run's dropout differ from an uninterrupted one.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler or SequentialSampler(dataset),
                      num_workers=num_workers, drop_last=training, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=worker_init, collate_fn=collate_clips, generator=torch.Generator())
