"""Peak memory of a 25x10 test as the number of videos grows, with and without --max-views-per-batch.

Each measurement runs in a fresh process (peak RSS is per process):

    python benchmarks/test_memory.py            # the table
    python benchmarks/test_memory.py --one N MAX_VIEWS   # one run, prints its peak RSS in MB

ResNet-18 at 112x112 crops keeps CPU time low; the views per video (25 segments x TenCrop = 250) and the
chunking are those of the real protocol, and activation memory scales the same way at 224.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tsnctl.bench.synthetic import render_frames, write_frame_folder
from tsnctl.config import load_config
from tsnctl.engine.evaluate import run_test
from tsnctl.weights.init import build_model


def one(videos: int, max_views: int) -> float:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_frame_folder(Path(tmp) / "clip", render_frames(50, height=128, width=170))
        (Path(tmp) / "list.txt").write_text(f"{folder} 50 0\n" * videos)
        cfg = load_config(None, [f"data.test_list={Path(tmp) / 'list.txt'}", "data.short_side=128",
                                 "data.crop_size=112", "data.num_workers=0", "model.backbone=resnet18",
                                 "model.num_classes=10", f"test.max_views_per_batch={max_views}",
                                 "train.device=cpu"])
        run_test(build_model(cfg.model), cfg)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(f"{one(int(sys.argv[2]), int(sys.argv[3])):.0f}")
        return
    print("videos | peak RSS MB, --max-views-per-batch 50 | peak RSS MB, all 250 views at once")
    for videos in (1, 2, 4):
        row = [subprocess.run([sys.executable, __file__, "--one", str(videos), str(mv)], check=True,
                              capture_output=True, text=True).stdout.strip() for mv in (50, 0)]
        print(f"{videos} | {row[0]} | {row[1]}", flush=True)


if __name__ == "__main__":
    main()
