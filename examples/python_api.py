"""The whole lifecycle from Python, without the command line: data, train, test report, predict, plot.

    python examples/python_api.py WORKDIR            # the demo recipe (CPU, minutes)
    python examples/python_api.py WORKDIR --tiny     # a smoke run on a few clips (seconds)

Run it from the project root (the full run reads configs/demo.yaml). Everything the CLI does is a plain
function call; progress and logging are optional.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tsnctl.config import load_config
from tsnctl.data.dataset import ClipSettings
from tsnctl.demo.data import make_demo_data
from tsnctl.deploy.predict import predict, torch_predictor
from tsnctl.engine.evaluate import run_test
from tsnctl.engine.loaders import resolve_device
from tsnctl.engine.plots import plot_runs
from tsnctl.engine.reports import write_report
from tsnctl.engine.train import train
from tsnctl.prepare.extract import extract_frames
from tsnctl.weights.load import load_for_inference


def main(workdir: Path, tiny: bool) -> float:
    """Returns the test top-1 in percent."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # tsnctl logs to the "tsnctl" logger
    data = make_demo_data(workdir / "data", train_per_class=2 if tiny else 60, val_per_class=1 if tiny else 10)
    for video_list in (data.train_list, data.val_list):
        extract_frames(video_list, workdir / "frames", workers=1 if tiny else 2)

    size = ["data.short_side=40", "data.crop_size=32", "train.epochs=1", "train.batch_size=6",
            "train.log_interval=1", "test.num_seg=2", "test.crop=center"] if tiny else []
    cfg = load_config("configs/demo.yaml" if not tiny else None, [
        f"data.train_list={workdir / 'frames' / 'train_videos_frames.txt'}",
        f"data.val_list={workdir / 'frames' / 'val_videos_frames.txt'}",
        f"data.test_list={workdir / 'frames' / 'val_videos_frames.txt'}",
        f"data.label_file={data.label_file}", "data.num_workers=0",
        "model.backbone=resnet18", "model.num_classes=6", *size])
    result = train(cfg, workdir / "run", validate=True)
    print(f"trained {result.epochs_run} epoch(s), best valid top-1 {result.best_top1:.1f}%")

    loaded = load_for_inference(workdir / "run" / "best.pt")
    scores = run_test(loaded.model, cfg)
    report = write_report(scores, loaded.class_names, workdir / "run" / "test_report")
    worst = min((c for c in report.classes if c.support), key=lambda c: c.top1)
    print(f"test top-1 {scores.top1:.1f}% ({scores.protocol}); weakest class: {worst.name} {worst.top1:.0f}%")

    settings = ClipSettings("video", cfg.test.num_seg, cfg.data.short_side, cfg.data.crop_size, crop=cfg.test.crop)
    predictor = torch_predictor(loaded.model, settings, loaded.class_names, resolve_device("cpu"))
    clip = data.root / "videos" / "bouncing_ball" / "val_000.mp4"
    best = predict(predictor, [str(clip)], topk=1)[0]["topk"][0]
    print(f"{clip.name}: {best['label']} ({best['prob']:.2f})")
    print(f"curves -> {plot_runs([workdir / 'run'], workdir / 'run' / 'curves_copy.png')}")
    return scores.top1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--tiny"]
    if len(args) != 1:
        sys.exit(__doc__)
    main(Path(args[0]), tiny="--tiny" in sys.argv[1:])
