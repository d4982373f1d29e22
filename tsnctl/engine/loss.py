"""The training loss: cross entropy with label smoothing and class weights, after an optional mixup or cutmix.

Mixup (Zhang et al. 2018) blends each clip with another clip of the batch, ``lam x a + (1 - lam) x b``;
cutmix (Yun et al. 2019) pastes a box of the other clip into it. ``lam ~ Beta(alpha, alpha)``; the target is
the same blend of the two (smoothed) one-hot labels, with cutmix's ``lam`` the share of the area kept. On a
clip ``[T', 3, H, W]`` the same blend and the same box apply to every segment, so a mixed clip is still one
consistent video. With both alphas set, each mixed batch is cutmix with probability ``mix_switch_prob``, else
mixup (timm's ``Mixup`` does the same); ``mix_prob`` is the share of batches mixed at all.

Written here rather than taken from timm: timm's cutmix cuts ``x[:, :, y0:y1, x0:x1]`` of an image batch
``[N, C, H, W]``, which on ``[N, T', C, H, W]`` would cut channels and rows; the two operations fit in a few
lines, and timm would add a large dependency (and its hub client) for them.

The draws come from a generator seeded by (seed, epoch, step, rank): a resumed run mixes its batches exactly
as the uninterrupted one would have.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from tsnctl.config import TrainConfig


class Criterion:
    """``mix(clips, labels)`` then ``loss(logits, targets)`` for one training micro-batch."""

    def __init__(self, cfg: TrainConfig, num_classes: int, weight: torch.Tensor | None = None, rank: int = 0) -> None:
        self.cfg, self.num_classes, self.weight, self.rank = cfg, num_classes, weight, rank

    @property
    def mixing(self) -> bool:
        return self.cfg.mixup_alpha > 0 or self.cfg.cutmix_alpha > 0

    def mix(self, clips: torch.Tensor, labels: torch.Tensor, epoch: int = 0,
            step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``clips [N, T', 3, H, W]`` float and ``labels [N]`` -> (clips, targets): labels unchanged without
        mixing, else soft targets ``[N, num_classes]``."""
        if not self.mixing:
            return clips, labels
        rng = np.random.default_rng([self.cfg.seed, epoch, step, self.rank])
        soft = smooth_one_hot(labels, self.num_classes, self.cfg.label_smoothing)
        if rng.random() >= self.cfg.mix_prob:
            return clips, soft
        use_cutmix = self.cfg.cutmix_alpha > 0 and (self.cfg.mixup_alpha <= 0 or
                                                    rng.random() < self.cfg.mix_switch_prob)
        perm = torch.from_numpy(rng.permutation(len(labels))).to(clips.device)
        if use_cutmix:
            clips, lam = cutmix(clips, perm, float(rng.beta(self.cfg.cutmix_alpha, self.cfg.cutmix_alpha)), rng)
        else:
            lam = float(rng.beta(self.cfg.mixup_alpha, self.cfg.mixup_alpha))
            clips = mixup(clips, perm, lam)
        return clips, lam * soft + (1.0 - lam) * soft[perm]

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(logits.device)
        if targets.dim() == 2:  # soft targets: the smoothing is already in them
            return nn.functional.cross_entropy(logits, targets, weight=weight)
        return nn.functional.cross_entropy(logits, targets, weight=weight, label_smoothing=self.cfg.label_smoothing)


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """``[N]`` int -> ``[N, num_classes]`` float: ``1 - smoothing`` on the label plus ``smoothing / C`` everywhere
    (torch's ``label_smoothing``)."""
    one_hot = nn.functional.one_hot(labels, num_classes).float()
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def mixup(clips: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam x clip + (1 - lam) x clip[perm]`` for every clip ``[N, ...]``."""
    return clips * lam + clips[perm] * (1.0 - lam)


def cutmix(clips: torch.Tensor, perm: torch.Tensor, lam: float, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """Paste a box of ``clips[perm]`` covering about ``1 - lam`` of the frame into each clip ``[N, T', C, H, W]``,
    the same box in every segment; returns the clips and the share of the area each clip kept."""
    height, width = clips.shape[-2:]
    ratio = math.sqrt(1.0 - lam)
    box_h, box_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
    x0, x1 = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
    mixed = clips.clone()
    mixed[..., y0:y1, x0:x1] = clips[perm][..., y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
