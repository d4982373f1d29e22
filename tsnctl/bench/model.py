"""``bench model``: images/s of the TSN forward pass and of a training step, per numeric format.

Variants: fp32, channels_last, and autocast in bf16 (CPU and GPUs that support it) or fp16 (CUDA), each
with channels_last. Inputs are random normalized clips ``[B, T, 3, S, S]``; weights are random (nothing
is downloaded). A training step is forward, cross-entropy, backward and an SGD step.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from tsnctl.config import Config
from tsnctl.engine.loaders import resolve_device
from tsnctl.progress import ProgressFn, no_progress
from tsnctl.weights.init import build_model


@dataclass
class ModelCase:
    variant: str
    forward_ips: float | None  # images (views) per second, inference
    train_ips: float | None  # images per second, forward + backward + step
    note: str = ""


@dataclass
class ModelBench:
    device: str
    backbone: str
    batch_size: int
    num_seg: int
    size: int
    threads: int  # torch CPU threads
    cases: list[ModelCase] = field(default_factory=list)


def bench_model(cfg: Config, device: str | None = None, batch_size: int | None = None, num_seg: int | None = None,
                min_time: float = 3.0, threads: int = 0, progress: ProgressFn = no_progress) -> ModelBench:
    """Time the configured backbone at ``data.crop_size`` with ``batch_size`` clips of ``num_seg`` views
    (``threads > 0`` sets torch's CPU threads for the run)."""
    dev = resolve_device(device or cfg.train.device)
    previous_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _run(cfg, dev, batch_size, num_seg, min_time, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(cfg: Config, dev: torch.device, batch_size: int | None, num_seg: int | None, min_time: float,
         progress: ProgressFn) -> ModelBench:
    batch_size = batch_size or (cfg.train.batch_size if dev.type == "cuda" else 2)
    num_seg = num_seg or cfg.train.num_seg
    result = ModelBench(str(dev), cfg.model.backbone, batch_size, num_seg, cfg.data.crop_size, torch.get_num_threads())
    variants = _variants(dev)
    for done, (name, channels_last, dtype) in enumerate(variants):
        progress("bench model", done, len(variants), name)
        try:
            fwd, train = (_images_per_s(cfg, dev, batch_size, num_seg, channels_last, dtype, training, min_time)
                          for training in (False, True))
            result.cases.append(ModelCase(name, fwd, train))
        except RuntimeError as exc:  # e.g. a dtype this device's kernels lack
            result.cases.append(ModelCase(name, None, None, str(exc).splitlines()[0][:80]))
    progress("bench model", len(variants), len(variants), "")
    return result


def _variants(dev: torch.device) -> list[tuple[str, bool, torch.dtype | None]]:
    variants = [("fp32", False, None), ("fp32 channels_last", True, None)]
    if dev.type == "cpu" or torch.cuda.is_bf16_supported():
        variants.append(("bf16 autocast channels_last", True, torch.bfloat16))
    if dev.type == "cuda":
        variants.append(("fp16 autocast channels_last", True, torch.float16))
    return variants


def _images_per_s(cfg: Config, dev: torch.device, batch_size: int, num_seg: int, channels_last: bool,
                  dtype: torch.dtype | None, training: bool, min_time: float) -> float:
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg.model, pretrained="")).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train(training)
    size = cfg.data.crop_size
    clips = torch.randn(batch_size, num_seg, 3, size, size, device=dev)
    labels = torch.randint(0, cfg.model.num_classes, (batch_size,), device=dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    autocast = torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()

    def step() -> None:
        with autocast, torch.set_grad_enabled(training):
            logits = model(clips)
            if training:
                loss = nn.functional.cross_entropy(logits.float(), labels)
        if training:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    step()  # warm-up: allocator, cuDNN autotuning, lazy init
    _sync(dev)
    iterations, started = 0, time.perf_counter()
    while iterations < 2 or time.perf_counter() - started < min_time:
        step()
        iterations += 1
        _sync(dev)
    return iterations * batch_size * num_seg / (time.perf_counter() - started)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
