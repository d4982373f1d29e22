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
from tsnctl.engine.loaders import clip_loader, model_input, read_split, resolve_device
from tsnctl.engine.metrics import accuracy, mean_class_accuracy
from tsnctl.models.tsm import clip_length, set_num_segments
from tsnctl.progress import ProgressFn, no_progress

log = logging.getLogger("tsnctl")


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, progress: ProgressFn = no_progress,
             task: str = "evaluate", max_views: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, C]`` (float32, CPU) and labels ``[N]`` for every clip of ``loader``, in order.

    ``max_views > 0`` bounds the views per forward pass (see ``chunked_logits``).
    """
    model.eval()
    set_num_segments(model, loader.dataset.settings.num_seg)  # the clip length of a temporal shift
    all_logits, all_labels = [], []
    total = len(loader)
    for step, (clips, labels) in enumerate(loader, start=1):
        all_logits.append(chunked_logits(model, clips, device, max_views).float().cpu())
        all_labels.append(labels)
        progress(task, step, total, "")
    return torch.cat(all_logits), torch.cat(all_labels)


def chunked_logits(model: torch.nn.Module, clips: torch.Tensor, device: torch.device, max_views: int = 0
                   ) -> torch.Tensor:
    """Logits ``[N, C]`` of uint8 clips ``[N, V, 3, H, W]``, at most ``max_views`` views per forward pass.

    The head averages backbone features over all V views, so the chunks' features are summed and divided
    by V once at the end: the same scores as one pass, with activation memory bounded by the chunk
    (a 25x10 clip in one pass needs 150 MB of float input alone). ``max_views <= 0``: one pass.
    """
    n, views = clips.shape[:2]
    if max_views <= 0 or n * views <= max_views:
        return model(model_input(clips, device))
    segments = clip_length(model)  # a temporal shift needs whole clips of T views in every chunk
    step = max(segments, max_views // n // segments * segments)
    total = None
    for start in range(0, views, step):
        features = model.forward_features(model_input(clips[:, start : start + step], device)).sum(dim=1)
        total = features if total is None else total + features
    return model.forward_head((total / views)[:, None])


def evaluate_all(model: torch.nn.Module, loader, device: torch.device, progress: ProgressFn = no_progress,
                 task: str = "evaluate", max_views: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``evaluate`` over every rank's shard of the dataset: logits ``[N, C]`` and labels ``[N]`` of all ``N``
    clips in list order, on every rank (each clip once, whatever the number of processes)."""
    logits, labels = evaluate(model, loader, device, progress, task, max_views)
    indices = torch.tensor(list(loader.sampler.inner), dtype=torch.long)  # EpochSampler wraps the shard's
    return gather_by_index(indices, logits, labels)


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
    logits, labels = evaluate_all(model.to(device), loader, device, progress, "test", cfg.test.max_views_per_batch)
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
