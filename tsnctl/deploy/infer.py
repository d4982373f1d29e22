"""CPU inference backends for a TSN checkpoint: the plain eager model, and a fused one that is exact and faster.

``fast``: BatchNorm folded into the convolutions, the input normalization folded into the first
convolution (it takes the uint8 views directly: no float pass to normalize them), NHWC (channels_last)
memory layout, which oneDNN runs faster on a CPU, and the views run a few at a time so the activations stay
in the caches and peak memory stays small. Measured with ``tsnctl bench predict`` against ``eager`` (the
model as trained: NCHW, BatchNorm layers, normalized float input, all views in one batch); see
docs/benchmarks.md. Logits agree with ``eager`` within 1e-4 relative (``tests/test_infer.py``).
bf16/INT8 would change the outputs, so no backend uses them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tsnctl.data.transforms import MEAN, STD, normalize

BACKENDS = ("fast", "eager")
# ResNet-50, 80 views at 224 on this 2-core machine: 8 at a time 1.9 s, 4: 1.9 s, all 80: 2.8-3.9 s (eager 4.8-5.3 s)
VIEWS_PER_CHUNK = 8


class NormalizedConv(nn.Module):
    """``conv(normalize(x))`` for uint8 ``x`` as one convolution: ``W' = W / (255 std)``,
    ``b' = b - sum(W mean / std)``.

    The zero padding of a normalized image is the raw value ``255 * mean``, not 0: the input is padded with
    that per channel explicitly, so border outputs are exact too.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or conv.groups != 1 or isinstance(conv.padding, str):
            raise ValueError("only a plain zero-padded convolution can take the normalization")
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        weight = conv.weight.detach()
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0])
        self.weight = nn.Parameter((weight / (255.0 * std)).contiguous(memory_format=torch.channels_last),
                                   requires_grad=False)
        self.bias = nn.Parameter(bias - (weight * (mean / std)).sum((1, 2, 3)), requires_grad=False)
        self.register_buffer("fill", (255.0 * mean).view(3, 1, 1))
        self.padding = tuple(conv.padding)
        self.stride, self.dilation = conv.stride, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        b, c, h, w = x.shape
        buf = torch.empty(b, c, h + 2 * ph, w + 2 * pw, memory_format=torch.channels_last)
        if ph:
            buf[:, :, :ph] = self.fill
            buf[:, :, ph + h:] = self.fill
        if pw:
            buf[:, :, ph:ph + h, :pw] = self.fill
            buf[:, :, ph:ph + h, pw + w:] = self.fill
        buf[:, :, ph:ph + h, pw:pw + w] = x  # uint8 -> float32 in the same pass
        return F.conv2d(buf, self.weight, self.bias, self.stride, 0, self.dilation)


def fuse_batchnorm(module: nn.Module) -> None:
    """Fold every eval-mode BatchNorm into the convolution before it (in place): torchvision ResNet names
    (``convK``/``bnK`` pairs, ``downsample = Sequential(conv, bn)``). A temporal-shift conv keeps its class."""
    for child in module.children():
        fuse_batchnorm(child)
    children = dict(module.named_children())
    for name, conv in children.items():
        bn = children.get("bn" + name.removeprefix("conv")) if name.startswith("conv") else None
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, name, fuse_conv_bn_eval(conv, bn))
            setattr(module, "bn" + name.removeprefix("conv"), nn.Identity())
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                module[i + 1] = nn.Identity()


class FastTSN(nn.Module):
    """A TSN for inference on uint8 clips ``[N, V, 3, H, W]`` -> logits ``[N, C]`` (see the module doc)."""

    def __init__(self, model: nn.Module, views_per_chunk: int = VIEWS_PER_CHUNK) -> None:
        super().__init__()
        model = model.eval()  # changed in place: a second copy of the weights would only cost memory
        fuse_batchnorm(model.backbone)
        model.backbone.conv1 = NormalizedConv(model.backbone.conv1)
        self.model = model.to(memory_format=torch.channels_last)
        self.views_per_chunk = views_per_chunk
        # A temporal shift mixes the views of a clip: those must run together.
        self.shifted = any(hasattr(m, "shift_div") for m in model.modules())

    @torch.inference_mode()
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, views = clips.shape[:2]
        flat = clips.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        step = n * views if self.shifted else self.views_per_chunk
        features = torch.cat([self.model.backbone(flat[i:i + step]) for i in range(0, n * views, step)])
        return self.model.forward_head(features.view(n, views, -1))


class EagerTSN(nn.Module):
    """The model as trained, on uint8 clips: normalize all views, then one NCHW batch (tsnctl <= 0.1)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    @torch.inference_mode()
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(clips))


def inference_model(model: nn.Module, backend: str = "fast") -> nn.Module:
    """``model`` (a TSN) as a uint8-clip classifier under ``backend``; ``fast`` rebuilds ``model`` in place."""
    if backend == "eager":
        return EagerTSN(model)
    if backend == "fast":
        return FastTSN(model)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
