"""BatchNorm whose running variance follows the reference's update (PaddleVideo / Paddle's BatchNorm).

Both frameworks normalise a training batch with its biased variance and move the running statistics by
``momentum`` 0.1; they differ only in what goes into ``running_var``: torch the unbiased variance
(x n/(n-1), n = N*H*W values per channel), Paddle the biased one. The gap is 1/(n-1) of each update, so it
matters for small batches and late stages (a 7x7 map), not for the outputs of a training step.

The correction needs no second pass over the activations: with ``r`` the running variance before the
step and ``r_t`` torch's update, the biased update is ``((n-1) r_t + (1-m) r) / n`` (all terms positive,
so no cancellation in float32). Eval mode is torch's BatchNorm unchanged, so ONNX export and checkpoints
(same parameters and buffers, same keys) are those of ``nn.BatchNorm2d``.
"""

from __future__ import annotations

import torch
from torch import nn


class BiasedVarBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose running_var is updated with the biased batch variance (as Paddle does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats and self.running_var is not None):
            return super().forward(x)
        before = self.running_var.detach().clone()
        out = super().forward(x)  # normalises with the batch statistics, updates running_* torch's way
        n = x.numel() // x.shape[1]
        if n > 1:
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            with torch.no_grad():
                self.running_var.mul_(n - 1).add_(before, alpha=1.0 - m).div_(n)
        return out


def use_biased_running_var(model: nn.Module) -> None:
    """Swap every ``nn.BatchNorm2d`` of ``model`` for a ``BiasedVarBatchNorm2d`` with the same state."""
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            swapped = BiasedVarBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                           child.track_running_stats, device=_device(child))
            swapped.load_state_dict(child.state_dict())
            swapped.train(child.training)
            setattr(model, name, swapped)
        else:
            use_biased_running_var(child)


def _device(module: nn.Module) -> torch.device | None:
    tensor = next(iter(module.state_dict().values()), None)
    return tensor.device if tensor is not None else None


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm kept in eval mode whatever ``model.train()`` asks: running statistics fixed, used as stored.

    Same parameters, buffers and keys as ``nn.BatchNorm2d`` (checkpoints and export are unchanged). Any
    BatchNorm in eval mode computes the same thing, so a ``BiasedVarBatchNorm2d`` or ``SyncBatchNorm`` turns
    into this class without a change in its outputs.
    """

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


def freeze_batchnorm(bn: nn.Module) -> None:
    """Fix ``bn``'s statistics (eval mode from now on) and its affine weight and bias (no gradient)."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"not a BatchNorm: {type(bn).__name__}")
    bn.__class__ = FrozenBatchNorm2d
    bn.eval()
    for param in bn.parameters(recurse=False):
        param.requires_grad_(False)
