"""Fine-tuning on a small dataset: frozen stages, partial BN, class weights and a class-balanced sampler.

- ``model.freeze_stages N`` (MMAction2's ``frozen_stages``): stage 0 (``conv1``/``bn1``) and ``layer1`` ..
  ``layerN`` keep their weights; their BatchNorms stay in eval mode, so their statistics keep the
  pre-training's too. -1 (the default) trains everything.
- ``model.partial_bn`` (the TSN paper, section 3.3; tsn-pytorch's ``partialBN``): every BatchNorm except the
  first one (``bn1``, which adapts to the new input distribution) keeps its statistics and affine. With a
  small batch per GPU, batch statistics are noisy; the pre-trained ones are better estimates.
- ``train.class_weights auto``: each class weighs N / (C x n_c) in the loss (sklearn's "balanced"), so a
  rare class counts as much as a common one in total.
- ``train.sampler balanced``: each epoch draws as many clips as the list holds, every class equally often
  (with replacement inside a class), in an order fixed by (seed, epoch) and dealt round-robin to the ranks.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import Sampler

from tsnctl.models.bn import freeze_batchnorm
from tsnctl.models.tsn import TSN

log = logging.getLogger("tsnctl")

STAGES = ("layer1", "layer2", "layer3", "layer4")


def freeze(model: TSN, freeze_stages: int = -1, partial_bn: bool = False) -> list[str]:
    """Apply ``freeze_stages`` and ``partial_bn`` to ``model`` in place; returns the frozen module names.

    Frozen parameters get ``requires_grad=False`` (the optimizer skips them: they never get a gradient) and
    frozen BatchNorms become ``FrozenBatchNorm2d``, which ``model.train()`` cannot put back in training mode.
    """
    backbone = model.backbone
    frozen: list[str] = []
    if freeze_stages >= 0:
        stages = [("conv1", backbone.conv1), ("bn1", backbone.bn1)]
        stages += [(name, getattr(backbone, name)) for name in STAGES[:freeze_stages]]
        for name, module in stages:
            for param in module.parameters():
                param.requires_grad_(False)
            for child in _batchnorms(module):
                freeze_batchnorm(child)
            frozen.append(f"backbone.{name}")
    if partial_bn:
        norms = _batchnorms(backbone)
        for child in norms[1:]:  # the first BatchNorm (bn1) keeps learning
            freeze_batchnorm(child)
        frozen.append(f"{len(norms) - 1} BatchNorm layers after backbone.bn1")
    if frozen:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("frozen: %s; %d of %d parameters train", ", ".join(frozen), trainable,
                 sum(p.numel() for p in model.parameters()))
    return frozen


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``module`` in registration (= forward) order."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C x n_c)`` (1 for a class without clips: it never appears)."""
    counts = Counter(labels)
    total, present = len(labels), max(len(counts), 1)
    weights = [total / (present * counts[c]) if counts[c] else 1.0 for c in range(num_classes)]
    return torch.tensor(weights, dtype=torch.float32)


class BalancedSampler(Sampler[int]):
    """Class-balanced indices for one rank: ``len(labels) // world`` per epoch, each class drawn with equal
    probability (clips within a class uniformly, with replacement).

    The global order of an epoch depends only on (seed, epoch); rank r takes positions r, r + W, ... of it, so
    the ranks' shares are disjoint and together equal what one process would draw (as ``DistributedSampler``
    with ``drop_last``). Has ``set_epoch`` like ``DistributedSampler``, so ``EpochSampler`` wraps it unchanged.
    """

    def __init__(self, labels: Sequence[int], rank: int = 0, num_replicas: int = 1, seed: int = 0) -> None:
        counts = Counter(labels)
        self.weights = torch.tensor([1.0 / counts[label] for label in labels], dtype=torch.float64)
        self.rank, self.num_replicas, self.seed, self.epoch = rank, num_replicas, seed, 0
        self.num_samples = len(labels) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        order = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(order[self.rank:total:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
