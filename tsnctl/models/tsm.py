"""Temporal Shift Module (Lin et al., ICCV 2019): mix neighbouring frames inside a 2D backbone for free.

In every residual block, before the first conv of the residual branch, 1/``shift_div`` of the channels
of each frame are replaced by the same channels of the next frame and another 1/``shift_div`` by those of
the previous frame (zeros past either end); the identity branch stays unshifted ("residual" placement,
the paper's best). The shift has no weights, so the backbone's state dict keys are those of the plain
ResNet (torchvision's names) and ImageNet or TSN weights load unchanged.

The shift needs the clip length T to regroup the backbone's ``[N*V, C, H, W]`` batch into clips. The
views of a clip are ``[crop0 x T, crop1 x T, ...]`` (see ``data/transforms.py``), so consecutive groups of
T views are one crop's clip: ``[N*V, C, H, W] -> [N*V/T, T, C, H, W]``. T is set per mode with
``set_num_segments`` (train, valid and test may sample different segment counts).
"""

from __future__ import annotations

import torch
from torch import nn

from tsnctl.errors import UserError
from tsnctl.models.resnet import ResNet


def temporal_shift(x: torch.Tensor, num_segments: int, shift_div: int) -> torch.Tensor:
    """Shift channels along time. ``x [N*T, C, H, W] -> [N*T, C, H, W]``.

    Channels ``[0, C/div)`` of frame t take frame t+1's values (zeros at the last frame), channels
    ``[C/div, 2C/div)`` take frame t-1's (zeros at the first frame); the rest stay. Built from slices and
    ``torch.cat`` only (no in-place assignment), so TorchScript/ONNX export traces every step and the batch
    and view counts stay dynamic.
    """
    c, h, w = x.shape[1:]
    clips = x.reshape(-1, num_segments, c, h, w)
    fold = c // shift_div
    from_next, from_prev, rest = clips[:, :, :fold], clips[:, :, fold : 2 * fold], clips[:, :, 2 * fold :]
    from_next = torch.cat([from_next[:, 1:], torch.zeros_like(from_next[:, :1])], dim=1)
    from_prev = torch.cat([torch.zeros_like(from_prev[:, :1]), from_prev[:, :-1]], dim=1)
    return torch.cat([from_next, from_prev, rest], dim=2).reshape(x.shape)


class ShiftConv2d(nn.Conv2d):
    """A Conv2d that shifts its input along time first; its state dict is that of the Conv2d it replaces."""

    def __init__(self, conv: nn.Conv2d, shift_div: int, fixed_segments: int = 0) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
        self.load_state_dict(conv.state_dict())
        self.shift_div = shift_div
        self.fixed_segments = fixed_segments  # > 0: always shift over this many segments
        self.num_segments = fixed_segments or 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and x.shape[0] % self.num_segments:
            raise UserError(f"temporal shift over {self.num_segments} segments: got {x.shape[0]} frames in the "
                            "batch, not a multiple of it (views per clip must be segments x crops)")
        return super().forward(temporal_shift(x, self.num_segments, self.shift_div))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, shift_div={self.shift_div}, num_segments={self.num_segments}"


def add_temporal_shift(resnet: ResNet, shift_div: int = 8, place: str = "residual", fixed_segments: int = 0) -> None:
    """Put a temporal shift at the start of the residual branch of every block (BasicBlock or Bottleneck)."""
    if place != "residual":
        raise UserError(f"unknown temporal shift place {place!r}; choose one of residual")
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for block in layer:
            if block.conv1.in_channels < 2 * shift_div:
                raise UserError(f"model.shift_div {shift_div} leaves no channel to shift in a block of "
                                f"{block.conv1.in_channels} channels")
            block.conv1 = ShiftConv2d(block.conv1, shift_div, fixed_segments)


def set_num_segments(model: nn.Module, num_segments: int) -> None:
    """Tell every shift in ``model`` (wrapped or not) the clip length T of the coming inputs.

    A shift built with ``model.shift_segments > 0`` keeps that fixed T. No-op for a model without shift.
    """
    for module in model.modules():
        if isinstance(module, ShiftConv2d):
            module.num_segments = module.fixed_segments or num_segments


def clip_length(model: nn.Module) -> int:
    """The T a shift in ``model`` regroups views by (1 without shift): views may only be split at multiples."""
    return next((m.num_segments for m in model.modules() if isinstance(m, ShiftConv2d)), 1)
