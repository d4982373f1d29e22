"""GPU throughput of tsnctl's training step and 25x10 test, on synthetic tensors (no data files needed).

    python benchmarks/gpu_bench.py train     # clips/s of one training step (ResNet-50, 224 px, 8 segments)
    python benchmarks/gpu_bench.py test      # videos/s of the 25 segments x 10 crops test protocol
    python benchmarks/gpu_bench.py scaling   # clips/s on 1 GPU vs all GPUs (DDP through tsnctl's launcher)

Model-only numbers: decoding and transforms are measured elsewhere. Each prints one result line.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from tsnctl import launch as launcher
from tsnctl.config import TrainConfig
from tsnctl.engine import parallel
from tsnctl.engine import ranks as dist
from tsnctl.models.tsn import TSN


def train_rate(steps: int, batch: int, num_seg: int, amp: str, channels_last: bool, progress=None) -> float:
    """Training clips/s of this process (all ranks' clips when run under the launcher)."""
    device = torch.device("cuda", torch.cuda.current_device())
    cfg = TrainConfig(batch_size=batch, amp=amp, channels_last=channels_last)
    model = parallel.prepare_model(TSN("resnet50", 400), device, cfg)
    net = parallel.parallel_model(model, device, cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    clips = torch.randn(batch, num_seg, 3, 224, 224, device=device)
    labels = torch.randint(0, 400, (batch,), device=device)
    net.train()

    def step() -> None:
        with parallel.autocast(device, amp):
            loss = nn.functional.cross_entropy(net(clips).float(), labels)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 40.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):  # warm-up: cuDNN autotuning, allocator
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps * dist.world_size() / (time.perf_counter() - started)


@torch.no_grad()
def test_rate(videos: int, batch: int, amp: str, channels_last: bool) -> float:
    """Videos/s with 25 segments x 10 crops = 250 views of 224 px per video."""
    device = torch.device("cuda")
    model = TSN("resnet50", 400).to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    clips = torch.randn(batch, 250, 3, 224, 224, device=device)
    with parallel.autocast(device, amp):
        for _ in range(3):
            model(clips)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(videos // batch):
            model(clips)
        torch.cuda.synchronize()
    return videos // batch * batch / (time.perf_counter() - started)


def _scaling_entry(cfg_dict: dict, steps: int, batch: int, num_seg: int, amp: str, progress=None) -> float:
    return train_rate(steps, batch, num_seg, amp, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["train", "test", "scaling"])
    parser.add_argument("--amp", default="bf16", choices=["none", "bf16", "fp16"])
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--batch", type=int, default=32, help="clips per GPU (train) or videos per pass (test)")
    parser.add_argument("--num-seg", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: nothing to measure")
    torch.backends.cudnn.benchmark = True
    setup = f"ResNet-50, 224 px, amp {args.amp}, channels_last {args.channels_last}"
    if args.what == "train":
        rate = train_rate(args.steps, args.batch, args.num_seg, args.amp, args.channels_last)
        print(f"train: {rate:.1f} clips/s ({args.num_seg} segments x batch {args.batch}, {setup}, 1 GPU)")
    elif args.what == "test":
        batch = min(args.batch, 4)
        rate = test_rate(args.steps * batch, batch, args.amp, args.channels_last)
        print(f"test: {rate:.2f} videos/s (25 segments x 10 crops, {batch} videos per pass, {setup})")
    else:
        gpus = torch.cuda.device_count()
        one = train_rate(args.steps, args.batch, args.num_seg, args.amp, True)
        plan = launcher.launch_plan("cuda", gpus="all")
        many = launcher.launch(plan, _scaling_entry, ({}, args.steps, args.batch, args.num_seg, args.amp))
        print(f"scaling: 1 GPU {one:.1f} clips/s, {gpus} GPUs {many:.1f} clips/s = {many / one:.2f}x "
              f"({100 * many / one / gpus:.0f}% efficiency; batch {args.batch} per GPU, {setup})")


if __name__ == "__main__":
    main()
