"""The shipped demo recipe on synthetic datasets it was not tuned to: one table, one command.

For each generator of ``tsnctl demo-data --kind`` (shapes: the demo; textures: texture only; motion: motion
only) renders 240 training and 60 validation clips, extracts frames, trains ``configs/demo.yaml`` with only
the lists, label file and class count swapped, for each seed, and prints a markdown table of the final
training top-1 (the last checkpoint evaluated on the training list as validation is, and the augmented
per-batch figure of the last epoch), the best and last validation top-1 of training's per-epoch probe
(3 segments, centre crop), the validation top-1 of the last checkpoint under the config's test protocol
(8 segments x TenCrop, what `make demo` reports), all as mean +- sample std over seeds, and the wall time of
training.
Datasets are rendered once per kind (seed 0) and reused; runs already finished are read back and an
interrupted run starts over, so an interrupted table resumes.

    PYTHONPATH=. python benchmarks/recipe_table.py [--out runs/recipe_table] [--kinds shapes textures motion]
        [--seeds 0 1 2] [--format frames|video] [-o train.epochs=20 ...]
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
CLASSES = {"shapes": 6, "direction": 4, "textures": 6, "motion": 5}


def tsnctl(*args: object) -> None:
    """Run the CLI as a user would (a fresh process, quiet), failing loudly."""
    cmd = [sys.executable, "-c", "from tsnctl.cli import main; main()", "-q", *map(str, args)]
    subprocess.run(cmd, check=True, cwd=ROOT)


def prepare(kind: str, out: Path, train_clips: int, val_clips: int) -> Path:
    """Render and extract one dataset (once); returns its folder."""
    data = out / "data" / kind
    n = CLASSES[kind]
    if not (data / "frames" / "val_videos_frames.txt").is_file():
        tsnctl("demo-data", data / "videos", "--kind", kind, "--train-per-class", train_clips // n,
               "--val-per-class", val_clips // n)
        for split in ("train", "val"):
            tsnctl("extract-frames", data / "videos" / f"{split}_videos.txt", data / "frames", "--workers", 2)
    return data


def run(kind: str, data: Path, seed: int, fmt: str, out: Path, overrides: list[str]) -> dict[str, float]:
    """Train one seed (unless its run is complete); returns its figures from metrics.csv."""
    run_dir = out / "runs" / f"{kind}_{fmt}_seed{seed}"
    done = run_dir / "seconds.txt"
    lists = {"frames": (data / "frames" / "train_videos_frames.txt", data / "frames" / "val_videos_frames.txt"),
             "video": (data / "videos" / "train_videos.txt", data / "videos" / "val_videos.txt")}[fmt]
    options = [f"data.format={fmt}", f"data.train_list={lists[0]}", f"data.val_list={lists[1]}",
               f"data.label_file={data / 'videos' / 'labels.txt'}", f"model.num_classes={CLASSES[kind]}",
               f"train.seed={seed}", *overrides]
    option_args = [x for o in options for x in ("-o", o)]
    if not done.is_file():
        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run starts over, so its time is whole
        started = time.perf_counter()
        tsnctl("train", "-c", "configs/demo.yaml", "--output", run_dir, "--validate",
               *option_args)
        done.write_text(f"{time.perf_counter() - started:.1f}\n")
    if not (run_dir / "train_fit.json").is_file():
        # How well the final weights fit the training set, measured as validation is (eval mode: no dropout,
        # BN running statistics, centre crop, 3 segments); the per-batch training top-1 of metrics.csv is
        # taken with dropout and random crops on, and lags it.
        tsnctl("test", "-c", "configs/demo.yaml", "-w", run_dir / "last.pt", "--list", lists[0], "--crop", "center",
               "--num-seg", 3, "--metrics-json", run_dir / "train_fit.json", "--report-dir", run_dir / "train_fit",
               *option_args)
    if not (run_dir / "valid_test.json").is_file():
        # The validation clips scored by the config's test protocol (8 segments x TenCrop for the demo recipe,
        # as `make demo` reports its top-1), from the last checkpoint: the per-epoch validation above takes 3
        # segments and one centre crop, a cheaper and noisier probe.
        tsnctl("test", "-c", "configs/demo.yaml", "-w", run_dir / "last.pt", "--list", lists[1],
               "--metrics-json", run_dir / "valid_test.json", *option_args)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train_rows = [r for r in rows if r["split"] == "train"]
    valid = [float(r["top1"]) for r in rows if r["split"] == "valid"]
    fit = json.loads((run_dir / "train_fit.json").read_text())["top1"]
    tested = json.loads((run_dir / "valid_test.json").read_text())["top1"]
    return {"fit": float(fit), "train": float(train_rows[-1]["top1"]), "best": max(valid), "last": valid[-1],
            "tested": float(tested),
            "epochs": float(len(train_rows)), "seconds": float(done.read_text())}


def cell(values: list[float], digits: int = 1) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "recipe_table")
    parser.add_argument("--kinds", nargs="+", default=["shapes", "textures", "motion"], choices=list(CLASSES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--format", default="frames", choices=["frames", "video"])
    parser.add_argument("--train-clips", type=int, default=240)
    parser.add_argument("--val-clips", type=int, default=60)
    parser.add_argument("-o", dest="overrides", action="append", default=[], help="extra config override")
    args = parser.parse_args()
    lines = ["| data (classes) | seeds | train top-1 (eval mode, final) | train top-1 (last epoch, augmented) "
             "| valid top-1 (best) | valid top-1 (last) | valid top-1 (test protocol, last) | epochs "
             "| minutes per run |", "|---" * 9 + "|"]
    for kind in args.kinds:
        data = prepare(kind, args.out, args.train_clips, args.val_clips)
        results = [run(kind, data, seed, args.format, args.out, args.overrides) for seed in args.seeds]
        figures = {key: [r[key] for r in results] for key in results[0]}
        lines.append(f"| {kind} ({CLASSES[kind]}) | {', '.join(map(str, args.seeds))} | {cell(figures['fit'])} "
                     f"| {cell(figures['train'])} "
                     f"| {cell(figures['best'])} | {cell(figures['last'])} | {cell(figures['tested'])} "
                     f"| {cell(figures['epochs'], 0)} "
                     f"| {cell([s / 60 for s in figures['seconds']])} |")
        print(f"{kind}: " + "; ".join(f"seed {s}: fit {r['fit']:.1f} train {r['train']:.1f} best {r['best']:.1f} "
                                      f"last {r['last']:.1f} tested {r['tested']:.1f} ({r['seconds'] / 60:.1f} min)"
                                      for s, r in zip(args.seeds, results, strict=True)), flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
