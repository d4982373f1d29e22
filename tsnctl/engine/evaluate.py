"""Evaluation: collect clip-level logits, score them, and the ``test`` protocol around it."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from tsnctl.config import Config
from tsnctl.data.dataset import ClipSettings
from tsnctl.data.presets import VIEWS_PER_FRAME
from tsnctl.engine.distributed import check_shared_memory, gather_by_index, is_main, local_world_size
from tsnctl.engine.loaders import clip_loader, read_split, resolve_device
from tsnctl.engine.metrics import accuracy, mean_class_accuracy
from tsnctl.progress import ProgressFn, no_progress

log = logging.getLogger("tsnctl")


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, progress: ProgressFn = no_progress,
             task: str = "evaluate") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, C]`` (float32, CPU) and labels ``[N]`` for every clip of ``loader``, in order."""
    model.eval()
    all_logits, all_labels = [], []
    total = len(loader)
    for step, (clips, labels) in enumerate(loader, start=1):
        all_logits.append(model(clips.to(device, non_blocking=True)).float().cpu())
        all_labels.append(labels)
        progress(task, step, total, "")
    return torch.cat(all_logits), torch.cat(all_labels)


def evaluate_all(model: torch.nn.Module, loader, device: torch.device, progress: ProgressFn = no_progress,
                 task: str = "evaluate") -> tuple[torch.Tensor, torch.Tensor]:
    """``evaluate`` over every rank's shard of the dataset: logits ``[N, C]`` and labels ``[N]`` of all ``N``
    clips in list order, on every rank (each clip once, whatever the number of processes)."""
    logits, labels = evaluate(model, loader, device, progress, task)
    return gather_by_index(torch.tensor(list(loader.sampler), dtype=torch.long), logits, labels)


@dataclass
class TestResult:
    top1: float
    top5: float
    mean_class: float
    num_videos: int
    protocol: str  # e.g. "25 segments x 10 crops (TenCrop) = 250 views"
    logits: torch.Tensor
    labels: torch.Tensor
    names: list[str]


def run_test(model: torch.nn.Module, cfg: Config, list_file: str = "", save_scores: str | Path | None = None,
             progress: ProgressFn = no_progress) -> TestResult:
    """Score every clip of the test list with ``cfg.test``'s protocol (features averaged over all views)."""
    device = resolve_device(cfg.train.device)
    samples = read_split(cfg, list_file or cfg.data.test_list, "test")
    settings = ClipSettings(cfg.data.format, cfg.test.num_seg, cfg.data.short_side, cfg.data.crop_size,
                            crop=cfg.test.crop, image_template=cfg.data.image_template)
    crops = VIEWS_PER_FRAME[cfg.test.crop]
    check_shared_memory(cfg.data.num_workers, cfg.test.batch_size, cfg.test.num_seg * crops, cfg.data.crop_size,
                        local_world_size())
    loader = clip_loader(samples, settings, cfg.test.batch_size, cfg.data.num_workers)
    logits, labels = evaluate_all(model.to(device), loader, device, progress, "test")
    crop_name = {"ten": "TenCrop", "three": "ThreeCrop", "center": "CenterCrop"}[cfg.test.crop]
    protocol = (f"{cfg.test.num_seg} segments x {crops} crop{'s' if crops > 1 else ''} ({crop_name}) = "
                f"{cfg.test.num_seg * crops} views per video")
    result = TestResult(accuracy(logits, labels, 1), accuracy(logits, labels, 5),
                        mean_class_accuracy(logits, labels), len(samples), protocol, logits, labels,
                        [s.name for s in samples])
    if save_scores and is_main():
        write_scores(save_scores, result)
    return result


def write_scores(path: str | Path, result: TestResult) -> None:
    """One row per video: ``name, label, logit_0 ... logit_{C-1}``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "label"] + [f"logit_{i}" for i in range(result.logits.shape[1])])
        for name, label, row in zip(result.names, result.labels.tolist(), result.logits.tolist(), strict=True):
            writer.writerow([name, label] + [f"{v:.6g}" for v in row])
