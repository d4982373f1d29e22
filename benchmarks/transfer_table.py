"""Measured transfer: fine-tuning from pre-trained weights against training from scratch, on a few clips per class.

New classes of the same visual world, as a user's own classes are to Kinetics: ``demo-data --kind textures``
has six texture classes; the source is three of them (stripes, checkerboard, dot grid; ``--pretrain-per-class``
clips each) and ``configs/demo.yaml`` (ResNet-18, from scratch) is pre-trained on it; the target is the other
three (crosshatch, blotches, streaks), rendered with another seed, ``--per-class`` training clips each. The
target is trained for the same number of epochs and batches in three arms:

- ``scratch (demo recipe)``: ``configs/demo.yaml`` from random weights (the from-scratch small-data recipe);
- ``scratch (fine-tune recipe)``: ``configs/finetune_tsn_r50.yaml`` without ``init_from`` (the recipe alone);
- ``fine-tune``: ``configs/finetune_tsn_r50.yaml`` from the pre-trained weights.

The fine-tune config is used with only what a CPU run at the demo's scale needs changed (ResNet-18, 64-pixel
frames, 3 segments, frames format, no early stop so every arm gets the same budget). Prints a markdown table
of the best and last validation top-1, the last validation loss (mean +- sample std over seeds) and the
minutes per run, and writes every run's figures to ``OUT/results_<per-class>pc_<epochs>ep.json``. Finished
runs are read back (the pre-training is shared by every budget), so an interrupted table resumes.

    PYTHONPATH=. python benchmarks/transfer_table.py [--out runs/transfer_table] [--seeds 0 1 2]
        [--per-class 3] [--val-per-class 30] [--epochs 10] [--batch-size 3] [--pretrain-per-class 40]
        [--pretrain-epochs 20]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["model.backbone=resnet18", "data.short_side=64", "data.crop_size=56", "data.format=frames",
         "data.num_workers=2", "train.num_seg=3", "valid.num_seg=3", "valid.batch_size=16", "test.num_seg=3",
         "train.early_stop_patience=0", "train.log_interval=1000"]


def tsnctl(*args: object) -> None:
    cmd = [sys.executable, "-c", "from tsnctl.cli import main; main()", "-q", *map(str, args)]
    subprocess.run(cmd, check=True, cwd=ROOT)


SOURCE = ["stripes", "checkerboard", "dot_grid"]  # classes of `demo-data --kind textures` pre-trained on
TARGET = ["crosshatch", "blotches", "streaks"]  # the new classes fine-tuned to


def prepare(out: Path, train_per_class: int, val_per_class: int, seed: int) -> Path:
    """Render ``--kind textures`` (all six classes) and extract its frames, once; returns its folder."""
    data = out / "data" / f"textures_{train_per_class}pc_seed{seed}"
    if not (data / "frames" / "val_videos_frames.txt").is_file():
        tsnctl("demo-data", data / "videos", "--kind", "textures", "--train-per-class", train_per_class,
               "--val-per-class", val_per_class, "--seed", seed)
        for split in ("train", "val"):
            tsnctl("extract-frames", data / "videos" / f"{split}_videos.txt", data / "frames", "--workers", 2)
    return data


def subset(data: Path, classes: list[str]) -> list[str]:
    """Lists and a label file of ``classes`` only (labels renumbered from 0) beside the frame lists; the
    options that point a config at them."""
    names = [line.split()[-1] for line in (data / "videos" / "labels.txt").read_text().splitlines()]
    new_label = {str(names.index(name)): str(i) for i, name in enumerate(classes)}
    slug = "_".join(classes)
    paths = {}
    for split in ("train", "val"):
        kept = []
        for line in (data / "frames" / f"{split}_videos_frames.txt").read_text().splitlines():
            path, frames, label = line.rsplit(" ", 2)
            if label in new_label:
                kept.append(f"{path} {frames} {new_label[label]}\n")
        paths[split] = data / "frames" / f"{split}_{slug}.txt"
        paths[split].write_text("".join(kept))
    labels = data / "frames" / f"labels_{slug}.txt"
    labels.write_text("".join(f"{name}\n" for name in classes))
    return [f"data.train_list={paths['train']}", f"data.val_list={paths['val']}", f"data.test_list={paths['val']}",
            "data.root=", f"data.label_file={labels}", f"model.num_classes={len(classes)}"]


def train(config: str, run_dir: Path, options: list[str]) -> dict[str, float]:
    """One run (unless complete); its best and last validation top-1, last validation loss and wall time."""
    done = run_dir / "seconds.txt"
    if not done.is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.perf_counter()
        tsnctl("train", "-c", config, "--output", run_dir, "--validate", *[x for o in options for x in ("-o", o)])
        done.write_text(f"{time.perf_counter() - started:.1f}\n")
    with open(run_dir / "metrics.csv", newline="") as f:
        valid = [r for r in csv.DictReader(f) if r["split"] == "valid"]
    top1 = [float(r["top1"]) for r in valid]
    return {"best": max(top1), "last": top1[-1], "loss": float(valid[-1]["loss"]), "seconds": float(done.read_text())}


def cell(values: list[float], digits: int = 1) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "transfer_table")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=3, help="training clips per class of the target data")
    parser.add_argument("--val-per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--pretrain-per-class", type=int, default=40)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    args = parser.parse_args()
    source = subset(prepare(args.out, args.pretrain_per_class, 10, seed=0), SOURCE)
    pretrain = args.out / "runs" / "pretrain_source"
    source_top1 = train("configs/demo.yaml", pretrain, source + [f"train.epochs={args.pretrain_epochs}"])["best"]
    target = subset(prepare(args.out, args.per_class, args.val_per_class, seed=1), TARGET)
    budget = [f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}"]
    arms = {"scratch (demo recipe)": ("configs/demo.yaml", ["model.init_from="]),
            "scratch (fine-tune recipe)": ("configs/finetune_tsn_r50.yaml", SMALL + ["model.init_from="]),
            "fine-tune": ("configs/finetune_tsn_r50.yaml", SMALL + [f"model.init_from={pretrain / 'best.pt'}"])}
    runs = {arm: [] for arm in arms}
    for seed in args.seeds:  # seed-major: an interrupted table has every arm of the first seeds
        for arm, (config, extra) in arms.items():
            slug = arm.split(" (")[0] + ("_demo" if "demo" in arm else "_ft" if "recipe" in arm else "")
            result = train(config, args.out / "runs" / f"{slug}_{args.per_class}pc_{args.epochs}ep_seed{seed}",
                           target + extra + budget + [f"train.seed={seed}"])
            runs[arm].append(result)
            print(f"{arm} seed {seed}: best {result['best']:.1f} last {result['last']:.1f}", flush=True)
    results = {"source_valid_top1": source_top1, "seeds": args.seeds, "arms": runs}
    (args.out / f"results_{args.per_class}pc_{args.epochs}ep.json").write_text(json.dumps(results, indent=1))
    print(f"pre-training on {', '.join(SOURCE)}: best valid top-1 {source_top1:.1f}")
    lines = [f"| arm ({args.per_class} clips per class, {args.epochs} epochs, batch {args.batch_size}) | seeds "
             "| valid top-1 (best) | valid top-1 (last) | valid loss (last) | minutes per run |",
             "|---|---|---|---|---|---|"]
    for arm, results in runs.items():
        figures = {key: [r[key] for r in results] for key in results[0]}
        lines.append(f"| {arm} | {', '.join(map(str, args.seeds))} | {cell(figures['best'])} "
                     f"| {cell(figures['last'])} | {cell(figures['loss'], 2)} "
                     f"| {cell([s / 60 for s in figures['seconds']])} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
