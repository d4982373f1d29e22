"""Latency of an exported TSN in onnxruntime, per execution provider, side by side in one run.

    python benchmarks/onnx_latency.py                          # ResNet-50, 25 x 10 views at 224, fp32 and fp16
    python benchmarks/onnx_latency.py --backbone resnet18 --views 4 --size 112 --repeats 3   # a quick CPU check

The model has random weights (latency does not depend on them) and is written by tsnctl's own exporter
(`tsnctl.deploy.export.to_onnx`, verified against torch). Providers that this onnxruntime build lacks are
reported as missing instead of failing, so the same command runs on CPU-only and GPU machines.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tsnctl.config import Config
from tsnctl.deploy.export import to_onnx
from tsnctl.deploy.runtime import inference_session
from tsnctl.errors import UserError
from tsnctl.models.tsn import TSN
from tsnctl.weights.load import LoadedModel


def export_model(folder: Path, backbone: str, num_seg: int, size: int, fp16: bool) -> Path:
    cfg = Config()
    cfg.model.backbone = backbone
    cfg.test.num_seg, cfg.test.crop = num_seg, "ten"
    cfg.data.short_side, cfg.data.crop_size = max(size, 256 * size // 224), size
    torch.manual_seed(0)
    loaded = LoadedModel(TSN(backbone, 400).eval(), cfg, [f"class_{i}" for i in range(400)])
    path = folder / f"{backbone}_{'fp16' if fp16 else 'fp32'}.onnx"
    to_onnx(loaded, path, fp16=fp16)
    return path


def latency_ms(path: Path, provider: str, views: int, size: int, repeats: int) -> float:
    session = inference_session(path, provider)
    dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
    clips = np.random.default_rng(0).standard_normal((1, views, 3, size, size)).astype(dtype)
    session.run(None, {"clips": clips})  # warm-up: provider initialisation, TensorRT engine build
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"clips": clips})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--views", type=int, default=250, help="views per video (25 segments x 10 crops = 250)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--providers", default="cpu,cuda,tensorrt")
    args = parser.parse_args()
    num_seg = max(1, args.views // 10)
    print(f"onnxruntime latency per video: {args.backbone}, {args.views} views of {args.size}x{args.size}, "
          f"batch 1, median of {args.repeats}")
    print("| provider | precision | ms per video |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for fp16 in (False, True):
            path = export_model(Path(tmp), args.backbone, num_seg, args.size, fp16)
            for provider in args.providers.split(","):
                try:
                    result = f"{latency_ms(path, provider, args.views, args.size, args.repeats):.1f}"
                except UserError as exc:
                    result = f"not run: {exc}"
                print(f"| {provider} | {'fp16' if fp16 else 'fp32'} | {result} |", flush=True)


if __name__ == "__main__":
    main()
