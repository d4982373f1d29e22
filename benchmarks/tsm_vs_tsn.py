"""TSN vs TSM on the direction demo data: same backbone, data, budget and seed; only the temporal shift differs.

The direction classes come in pairs whose clips are each other's time reversal (drift up/down, zoom
in/out), so per-frame appearance names the pair but never the direction. TSN, which averages per-frame
features, should be near chance on the direction within a pair; TSM should be well above.

    PYTHONPATH=. python benchmarks/tsm_vs_tsn.py [--out runs/tsm_vs_tsn] [--epochs 10] [--train-per-class 32]

Prints one table: video top-1 over 4 classes, pair accuracy (drift vs zoom) and direction accuracy
(the share of videos whose pair was right that also got the direction right; chance 50%).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch

from tsnctl.config import Config, validate
from tsnctl.demo.data import make_demo_data
from tsnctl.engine.evaluate import run_test
from tsnctl.engine.train import train
from tsnctl.weights.load import load_for_inference


def config(root: Path, args: argparse.Namespace, temporal_shift: bool) -> Config:
    """configs/demo.yaml's small-frame recipe on the direction data, with 8 segments."""
    cfg = Config()
    cfg.data.format = "video"
    cfg.data.train_list, cfg.data.val_list = str(root / "train_videos.txt"), str(root / "val_videos.txt")
    cfg.data.test_list, cfg.data.label_file = str(root / "val_videos.txt"), str(root / "labels.txt")
    cfg.data.short_side, cfg.data.crop_size, cfg.data.num_workers = 64, 56, args.workers
    cfg.model.backbone, cfg.model.num_classes, cfg.model.temporal_shift = "resnet18", 4, temporal_shift
    t = cfg.train
    t.num_seg, t.batch_size, t.epochs, t.lr, t.seed, t.save_interval = 8, 12, args.epochs, args.lr, 0, 0
    t.lr_steps, t.log_interval, t.device = [int(args.epochs * 0.75)], 1000, "cpu"
    cfg.test.num_seg, cfg.test.crop, cfg.test.batch_size = 8, args.crop, 4
    validate(cfg)
    return cfg


def pair_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Pair accuracy and direction accuracy given the right pair (classes 2k and 2k+1 form a pair)."""
    pred = logits.argmax(1)
    pair_ok = pred // 2 == labels // 2
    direction_ok = pair_ok & (pred == labels)
    return 100.0 * pair_ok.float().mean().item(), 100.0 * direction_ok.sum().item() / max(pair_ok.sum().item(), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/tsm_vs_tsn"))
    parser.add_argument("--train-per-class", type=int, default=32)
    parser.add_argument("--val-per-class", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--crop", default="center", choices=["center", "three", "ten"])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", choices=["TSN", "TSM"], help="Train and test one model only.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    data = args.out / "data"
    if not (data / "labels.txt").exists():
        make_demo_data(data, args.train_per_class, args.val_per_class, seed=0, kind="direction")
    rows = []
    for name, shift in (("TSM", True), ("TSN", False)):
        if args.only and name != args.only:
            continue
        cfg = config(data, args, shift)
        started = time.perf_counter()
        train(cfg, args.out / name.lower())
        train_s = time.perf_counter() - started
        loaded = load_for_inference(args.out / name.lower() / "last.pt", cfg)
        result = run_test(loaded.model, cfg)
        pair, direction = pair_scores(result.logits, result.labels)
        rows.append((name, result.top1, pair, direction, train_s, result.num_videos, result.protocol))

    print(f"\nresnet18 from scratch, 8 segments, {args.epochs} epochs, lr {args.lr}, batch 12, 64 px / 56 crop, "
          f"seed 0, {args.train_per_class * 4} training clips; test: {rows[0][6]}, {rows[0][5]} videos")
    print("| model | top-1 (4 classes) | pair accuracy | direction accuracy (chance 50%) | train time |")
    print("|---|---:|---:|---:|---:|")
    for name, top1, pair, direction, train_s, *_ in sorted(rows):
        print(f"| {name} | {top1:.1f}% | {pair:.1f}% | {direction:.1f}% | {train_s / 60:.1f} min |")


if __name__ == "__main__":
    main()
