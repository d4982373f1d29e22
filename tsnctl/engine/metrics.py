"""Classification metrics over logits ``[N, C]`` and labels ``[N]``."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean ``[N]``: the label is among the top ``k`` logits (k is capped at the class count)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy in percent."""
    return 100.0 * topk_correct(logits, labels, k).float().mean().item()


def mean_class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy averaged over the classes present in ``labels``, in percent."""
    correct = topk_correct(logits, labels, 1).float()
    per_class = [correct[labels == c].mean() for c in labels.unique()]
    return 100.0 * torch.stack(per_class).mean().item()
