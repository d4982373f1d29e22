"""Temporal Segment Network: a ResNet backbone (``models/resnet.py``) and the TSN consensus head.

Input ``[N, T', 3, H, W]`` (T' views per clip: segments, or segments x crops at test time) is folded to
``[N*T', 3, H, W]``; the backbone gives one pooled feature per view; the head averages the features of
all views of a clip, then applies dropout and a linear layer. Output: logits ``[N, num_classes]``.
With ``temporal_shift`` the backbone is a TSM (``models/tsm.py``): same weights and FLOPs, but its features
mix neighbouring segments, so the view order matters and ``set_num_segments`` must give the clip length.
"""

from __future__ import annotations

import torch
from torch import nn

from tsnctl import config
from tsnctl.errors import UserError
from tsnctl.models import resnet as resnets
from tsnctl.models.bn import use_biased_running_var
from tsnctl.models.tsm import add_temporal_shift

BACKBONES = {name: getattr(resnets, name) for name in config.BACKBONES}  # resnet18 -> its builder


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
        resnet = BACKBONES[backbone](zero_init_last=zero_init_last)  # torchvision's init (models/resnet.py)
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
