"""The optimiser and learning-rate schedule of a train config.

SGD with momentum and weight decay on every parameter (the TSN reference); with ``fc_lr_mult != 1`` the
classifier gets its own parameter group at ``lr x fc_lr_mult`` (MMAction2's TSM recipe uses 5). The schedule
is stepped once per epoch: a linear warm-up from ``warmup_ratio x lr`` over ``warmup_epochs`` epochs
(a staircase: epoch e of the warm-up runs at ``warmup_ratio + (1 - warmup_ratio) * e / warmup_epochs``,
MMAction2 ramps per iteration instead), times ``lr_gamma`` for every step in ``lr_steps`` already passed.
"""

from __future__ import annotations

from bisect import bisect_right

import torch
from torch import nn

from tsnctl.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float | None = None) -> torch.optim.SGD:
    """SGD over all parameters at ``lr`` (default ``cfg.lr``); the head's fc in a second group when its lr
    differs."""
    lr = cfg.lr if lr is None else lr
    if cfg.fc_lr_mult == 1.0:
        groups = [{"params": list(model.parameters())}]
    else:
        fc = [p for name, p in model.named_parameters() if name.startswith("head.fc.")]
        fc_ids = {id(p) for p in fc}
        rest = [p for p in model.parameters() if id(p) not in fc_ids]
        groups = [{"params": rest}, {"params": fc, "lr": lr * cfg.fc_lr_mult}]
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """The multiple of each group's base lr used in ``epoch`` (0-based)."""
    warm = 1.0
    if epoch < cfg.warmup_epochs:
        warm = cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * epoch / cfg.warmup_epochs
    return warm * cfg.lr_gamma ** bisect_right(sorted(cfg.lr_steps), epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch schedule of ``lr_factor``; call ``step()`` after each epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, cfg))
