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

import tsnctl


def main(workdir: Path, tiny: bool) -> float:
    """Returns the test top-1 in percent."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # tsnctl logs to the "tsnctl" logger
    data = tsnctl.make_demo_data(workdir / "data", train_per_class=2 if tiny else 60,
                                 val_per_class=1 if tiny else 10)
    for video_list in (data.train_list, data.val_list):
        tsnctl.extract_frames(video_list, workdir / "frames", workers=1 if tiny else 2)

    size = ["data.short_side=40", "data.crop_size=32", "train.epochs=1", "train.batch_size=6",
            "train.log_interval=1", "test.num_seg=2", "test.crop=center"] if tiny else []
    cfg = tsnctl.load_config("configs/demo.yaml" if not tiny else None, [
        f"data.train_list={workdir / 'frames' / 'train_videos_frames.txt'}",
        f"data.val_list={workdir / 'frames' / 'val_videos_frames.txt'}",
        f"data.test_list={workdir / 'frames' / 'val_videos_frames.txt'}",
        f"data.label_file={data.label_file}", "data.num_workers=0",
        "model.backbone=resnet18", "model.num_classes=6", *size])
    result = tsnctl.train(cfg, workdir / "run", validate=True)
    print(f"trained {result.epochs_run} epoch(s), best valid top-1 {result.best_top1:.1f}%")

    model = tsnctl.load_model(workdir / "run" / "best.pt")
    run = tsnctl.test(model, cfg, report_dir=workdir / "run" / "test_report")
    worst = min((c for c in run.report.classes if c.support), key=lambda c: c.top1)
    print(f"test top-1 {run.result.top1:.1f}% ({run.result.protocol}); weakest class: {worst.name} {worst.top1:.0f}%")

    clip = data.root / "videos" / "bouncing_ball" / "val_000.mp4"
    best = tsnctl.predict(model, [clip], topk=1)[0]["topk"][0]
    print(f"{clip.name}: {best['label']} ({best['prob']:.2f})")
    print(f"curves -> {tsnctl.plot_runs([workdir / 'run'], workdir / 'run' / 'curves_copy.png')}")
    return run.result.top1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--tiny"]
    if len(args) != 1:
        sys.exit(__doc__)
    main(Path(args[0]), tiny="--tiny" in sys.argv[1:])
