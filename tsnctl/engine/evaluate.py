"""Evaluation: collect clip-level logits, score them, and the ``test`` protocol around it.

A clip that cannot be read is excluded and listed, never replaced by another clip (the reference
silently substitutes a random other video, even at test time); the metrics say over how many videos
they were computed.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tsnctl.config import TEST_CROPS, Config
from tsnctl.data.dataset import BadClip
from tsnctl.data.presets import VIEWS_PER_FRAME
from tsnctl.data.splits import clip_settings
from tsnctl.data.views import FrameViews
from tsnctl.engine.loaders import clip_loader, model_input, read_split, resolve_decode_device, resolve_device
from tsnctl.engine.metrics import accuracy, mean_class_accuracy
from tsnctl.engine.parallel import check_shared_memory
from tsnctl.engine.ranks import all_ranks, gather_by_index, is_main, local_world_size
from tsnctl.errors import UserError
from tsnctl.models.tsm import clip_length, set_num_segments
from tsnctl.progress import ProgressFn, no_progress

log = logging.getLogger("tsnctl")


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, progress: ProgressFn = no_progress,
             task: str = "evaluate", max_views: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[BadClip]]:
    """Logits ``[N, C]`` (float32, CPU) and labels ``[N]`` for every readable clip of ``loader``, in
    order, and the clips that could not be read (N is the number of readable ones).

    ``max_views > 0`` bounds the views per forward pass (see ``chunked_logits``).
    """
    model.eval()
    set_num_segments(model, loader.dataset.settings.num_seg)  # the clip length of a temporal shift
    all_logits, all_labels, all_bad = [], [], []
    total = len(loader)
    for step, (clips, labels, bad) in enumerate(loader, start=1):
        all_bad.extend(bad)
        if len(labels):
            all_logits.append(chunked_logits(model, clips, device, max_views).float().cpu())
            all_labels.append(labels)
        progress(task, step, total, f"{len(all_bad)} unreadable" if all_bad else "")
    if not all_logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long), all_bad
    return torch.cat(all_logits), torch.cat(all_labels), all_bad


def chunked_logits(model: torch.nn.Module, clips: torch.Tensor | FrameViews, device: torch.device,
                   max_views: int = 0) -> torch.Tensor:
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
    if isinstance(clips, FrameViews):
        clips = clips.to(device)  # the frames cross once; each chunk cuts only its own views
    total = None
    for start in range(0, views, step):
        chunk = clips.views(start, start + step) if isinstance(clips, FrameViews) else clips[:, start : start + step]
        features = model.forward_features(model_input(chunk, device)).sum(dim=1)
        total = features if total is None else total + features
    return model.forward_head((total / views)[:, None])


def evaluate_all(model: torch.nn.Module, loader, device: torch.device, progress: ProgressFn = no_progress,
                 task: str = "evaluate", max_views: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[BadClip]]:
    """``evaluate`` over every rank's shard of the dataset: logits ``[N, C]`` and labels ``[N]`` of the
    ``N`` readable clips in list order, and every rank's unreadable clips (by index), on every rank (each
    clip once, whatever the number of processes)."""
    logits, labels, bad = evaluate(model, loader, device, progress, task, max_views)
    unreadable = {clip.index for clip in bad}
    shard = loader.sampler.inner  # EpochSampler wraps the shard's indices; unreadable clips have no row
    indices = torch.tensor([i for i in shard if i not in unreadable], dtype=torch.long)
    if len(indices) != len(labels):
        raise RuntimeError(f"{len(labels)} rows for {len(indices)} readable clips")  # collate broke the order
    if not len(labels):
        logits = torch.empty(0, 0)
    bad = sorted({clip.index: clip for clip in all_ranks(bad)}.values(), key=lambda clip: clip.index)
    return (*gather_by_index(indices, logits, labels), bad)


@dataclass
class TestResult:
    top1: float
    top5: float
    mean_class: float
    num_videos: int  # videos the metrics were computed over (the readable ones)
    protocol: str  # e.g. "25 segments x 10 crops (TenCrop) = 250 views"
    logits: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    excluded: list[BadClip] = field(default_factory=list)  # unreadable videos, left out of every metric

    @property
    def num_listed(self) -> int:
        return self.num_videos + len(self.excluded)


def run_test(model: torch.nn.Module, cfg: Config, list_file: str = "", save_scores: str | Path | None = None,
             progress: ProgressFn = no_progress) -> TestResult:
    """Score every clip of the test list with ``cfg.test``'s protocol (features averaged over all views)."""
    device = resolve_device(cfg.train.device)
    samples = read_split(cfg, list_file or cfg.data.test_list, "test")
    settings = clip_settings(cfg, "test")
    crops = VIEWS_PER_FRAME[cfg.test.crop]
    check_shared_memory(cfg.data.num_workers, cfg.test.batch_size, cfg.test.num_seg * crops, cfg.data.crop_size,
                        local_world_size())
    loader = clip_loader(samples, settings, cfg.test.batch_size, cfg.data.num_workers,
                         decode_device=resolve_decode_device(cfg.data.decode_device, device))
    logits, labels, bad = evaluate_all(model.to(device), loader, device, progress, "test",
                                       cfg.test.max_views_per_batch)
    for clip in bad if is_main() else []:
        log.warning("excluded from the test: %s", clip.reason)
    if not len(labels):
        raise UserError(f"{list_file or cfg.data.test_list}: none of its {len(samples)} videos could be read",
                        exit_code=1)
    excluded = {clip.index for clip in bad}
    kept = [s.name for i, s in enumerate(samples) if i not in excluded]
    crop_name = TEST_CROPS[cfg.test.crop]
    protocol = (f"{cfg.test.num_seg} segments x {crops} crop{'s' if crops > 1 else ''} ({crop_name}) = "
                f"{cfg.test.num_seg * crops} views per video")
    result = TestResult(accuracy(logits, labels, 1), accuracy(logits, labels, 5),
                        mean_class_accuracy(logits, labels), len(kept), protocol, logits, labels, kept, bad)
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
