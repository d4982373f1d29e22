"""Temporal Segment Network: a torchvision ResNet backbone and the TSN consensus head.

Input ``[N, T', 3, H, W]`` (T' views per clip: segments, or segments x crops at test time) is folded to
``[N*T', 3, H, W]``; the backbone gives one pooled feature per view; the head averages the features of
all views of a clip, then applies dropout and a linear layer. Output: logits ``[N, num_classes]``.
With ``temporal_shift`` the backbone is a TSM (``models/tsm.py``): same weights and FLOPs, but its features
mix neighbouring segments, so the view order matters and ``set_num_segments`` must give the clip length.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from tsnctl.config import ModelConfig
from tsnctl.errors import UserError
from tsnctl.models.bn import use_biased_running_var
from tsnctl.models.tsm import add_temporal_shift
from tsnctl.weight_formats import Weights, from_state_dict, load_into, read_weights

log = logging.getLogger("tsnctl")

BACKBONES = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
    "resnet152": torchvision.models.resnet152,
}

IMAGENET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
    "resnet152": torchvision.models.ResNet152_Weights.IMAGENET1K_V1,
}


class TSNHead(nn.Module):
    """Average over views, dropout, linear. ``[N, T', C] -> [N, num_classes]``."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.4, fc_std: float = 0.01) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)
        nn.init.normal_(self.fc.weight, 0.0, fc_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # The reference averages features (not scores) over all views, then classifies once.
        return self.fc(self.dropout(features.mean(dim=1)))


class TSN(nn.Module):
    """ResNet backbone + TSN head. ``forward(x [N, T', 3, H, W]) -> logits [N, num_classes]``."""

    def __init__(self, backbone: str = "resnet50", num_classes: int = 400, dropout: float = 0.4,
                 fc_std: float = 0.01, temporal_shift: bool = False, shift_div: int = 8,
                 shift_place: str = "residual", shift_segments: int = 0, bn_running_var: str = "unbiased",
                 zero_init_last: bool = False) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise UserError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        # torchvision's init: Kaiming normal convs, BN weight 1 / bias 0; zero_init_residual: each block's last
        # BN weight 0, so every block starts as the identity (Goyal et al. 2017; timm's zero_init_last)
        resnet = BACKBONES[backbone](zero_init_residual=zero_init_last)
        self.feature_dim = resnet.fc.in_features
        resnet.fc = nn.Identity()  # the backbone ends with global average pooling: [B, feature_dim]
        if temporal_shift:
            add_temporal_shift(resnet, shift_div, shift_place, shift_segments)
        if bn_running_var not in ("unbiased", "biased"):
            raise UserError(f"unknown model.bn_running_var {bn_running_var!r}; choose unbiased or biased")
        if bn_running_var == "biased":
            use_biased_running_var(resnet)  # the reference's running-variance update (models/bn.py)
        self.backbone = resnet
        self.head = TSNHead(self.feature_dim, num_classes, dropout, fc_std)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T', 3, H, W] -> [N, T', feature_dim]``: one pooled feature per view."""
        n, views = x.shape[:2]
        return self.backbone(x.flatten(0, 1)).view(n, views, -1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(cfg: ModelConfig) -> TSN:
    """The TSN (or TSM) of a model config, initialised from ``cfg.init_from`` or else ``cfg.pretrained`` when set."""
    model = TSN(cfg.backbone, cfg.num_classes, cfg.dropout, cfg.fc_std, cfg.temporal_shift, cfg.shift_div,
                cfg.shift_place, cfg.shift_segments, cfg.bn_running_var, cfg.zero_init_last)
    if cfg.init_from:
        init_from_weights(model, cfg.init_from, cfg.backbone)
    elif cfg.pretrained:
        load_backbone_weights(model, cfg.pretrained, cfg.backbone)
    return model


def load_backbone_weights(model: TSN, source: str, backbone: str) -> None:
    """Fill every backbone parameter from ``imagenet`` or a weights file of any supported format.

    A classifier head in the file (e.g. ImageNet's 1000 classes) is not used.
    """
    if source == "imagenet":
        weights = from_state_dict(_imagenet_state_dict(backbone), f"ImageNet weights for {backbone}")
    else:
        weights = read_weights(source)
    _load_backbone(model, weights, source, backbone)


def init_from_weights(model: TSN, source: str, backbone: str) -> None:
    """Start training from another model: its whole backbone, and its head when the class counts match."""
    weights = read_weights(source)
    _load_backbone(model, weights, source, backbone)
    stored, wanted = weights.num_classes, model.head.fc.out_features
    if stored is None:
        log.info("%s: %s without a classifier head; the head starts from its random init", source, weights.fmt)
    elif stored != wanted:
        log.info("%s: the head has %d classes, the model %d: re-initialising the head only", source, stored, wanted)
    else:
        head = {k.removeprefix("head."): v for k, v in weights.tensors.items() if k.startswith("head.")}
        load_into(model.head, head, source, "the TSN head", {k.removeprefix("head."): weights.name(k) for k in head})
        log.info("%s: initialised backbone and head from a %s", source, weights.fmt)


def _load_backbone(model: TSN, weights: Weights, source: str, backbone: str) -> None:
    tensors = weights.backbone()
    names = {k: weights.name(f"backbone.{k}") for k in tensors}
    load_into(model.backbone, tensors, source, backbone, names, weights.unknown)


def _imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    weights = IMAGENET_WEIGHTS[backbone]
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False)
    except Exception:  # noqa: BLE001 - no network, blocked proxy, partial file: all end the same way
        raise UserError(f"cannot download ImageNet weights for {backbone}: fetch {weights.url} and put it "
                        f"at {cache} (or set model.pretrained to the file's path)", exit_code=1) from None
