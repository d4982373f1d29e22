"""The optimiser and learning-rate schedule of a train config.

SGD with momentum and weight decay on every parameter (the TSN reference), or AdamW; with ``fc_lr_mult != 1`` the
classifier gets its own parameter group at ``lr x fc_lr_mult`` (MMAction2's TSM recipe uses 5).

Two schedules (``train.lr_schedule``):

- ``step`` (the reference), stepped once per epoch: a linear warm-up from ``warmup_ratio x lr`` over
  ``warmup_epochs`` epochs (a staircase: epoch e of the warm-up runs at ``warmup_ratio + (1 - warmup_ratio) *
  e / warmup_epochs``), times ``lr_gamma`` for every step in ``lr_steps`` already passed.
- ``cosine``, stepped once per optimizer step: a linear warm-up over ``warmup_epochs`` epochs' steps, then
  half a cosine from lr to 0 at the last step. A from-scratch run on a few hundred clips makes only a few
  hundred steps; per-epoch staircases waste a large share of them at a too-small or too-large lr, while a
  per-step ramp lets a higher peak lr start safely and the smooth decay lets BN statistics settle.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import torch
from torch import nn

from tsnctl.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """SGD (or AdamW) over all parameters at ``lr`` (default ``cfg.lr``); the head's fc in a second group
    when its lr differs."""
    lr = cfg.lr if lr is None else lr
    if cfg.fc_lr_mult == 1.0:
        groups = [{"params": list(model.parameters())}]
    else:
        fc = [p for name, p in model.named_parameters() if name.startswith("head.fc.")]
        fc_ids = {id(p) for p in fc}
        rest = [p for p in model.parameters() if id(p) not in fc_ids]
        groups = [{"params": rest}, {"params": fc, "lr": lr * cfg.fc_lr_mult}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """The step schedule: the multiple of each group's base lr used in ``epoch`` (0-based)."""
    warm = 1.0
    if epoch < cfg.warmup_epochs:
        warm = cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * epoch / cfg.warmup_epochs
    return warm * cfg.lr_gamma ** bisect_right(sorted(cfg.lr_steps), epoch)


def cosine_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The cosine schedule: the multiple of the base lr used by optimizer step ``step`` (0-based)."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * step / warm
    total = max(cfg.epochs * steps_per_epoch - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, total) / total))


def per_step(cfg: TrainConfig) -> bool:
    """Whether the scheduler is stepped after every optimizer step (cosine) or after every epoch (step)."""
    return cfg.lr_schedule == "cosine"


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """The configured schedule; call ``step()`` after each optimizer step when ``per_step(cfg)``, else after
    each epoch."""
    if per_step(cfg):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, cfg, steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, cfg))
