"""``predict --timeline`` on demo clips of known classes played back to back; and its peak memory, short vs long.

    python benchmarks/timeline_demo.py WEIGHTS OUT [--seconds 6] [--repeat 1] [--smooth K] [--threshold P]
        [-o test.crop=center ...]

Renders one demo clip per class (``tsnctl.demo.data.render_clip``, ``--seconds`` each, 15 fps), writes them
into one video ``OUT/concat.mp4`` (the sequence ``--repeat`` times), runs ``tsnctl predict --timeline`` on it in
a child process and prints the segments next to the true class changes, and the child's peak RSS. Run it with
``--repeat 1`` and ``--repeat 20`` to compare the peak memory of a short and a 20x longer video.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from tsnctl.demo.data import CLASSES, render_clip

FPS = 15
ORDER = ["expanding_rings", "bouncing_ball", "falling_rain", "sliding_checkerboard", "rotating_stripes"]


def concatenated(out: Path, seconds: float, repeat: int) -> list[tuple[float, float, str]]:
    """Write ``out`` and return the true ``(start, end, class)`` of each part."""
    frames_per_clip = round(seconds * FPS)
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, cls in enumerate(ORDER):
            assert cls in CLASSES
            render_clip(Path(tmp) / f"{k}.mp4", cls, np.random.default_rng(100 + k), num_frames=frames_per_clip,
                        fps=FPS)
            capture = cv2.VideoCapture(str(Path(tmp) / f"{k}.mp4"))
            clip = []
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                clip.append(frame)
            capture.release()
            parts.append((cls, clip))
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (128, 96))
        truth, t = [], 0.0
        for _ in range(repeat):
            for cls, clip in parts:
                for frame in clip:
                    writer.write(frame)
                truth.append((t, t + len(clip) / FPS, cls))
                t += len(clip) / FPS
        writer.release()
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--smooth", default="1")
    parser.add_argument("--threshold", default="0")
    parser.add_argument("-o", "--override", action="append", default=[])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    video = args.out / "concat.mp4"
    truth = concatenated(video, args.seconds, args.repeat)
    command = [sys.executable, "-c", "from tsnctl.cli import main; main()", "-q", "predict", str(video), "-w",
               args.weights, "--timeline", "--window", "2s", "--stride", "0.5s", "--smooth", args.smooth,
               "--threshold", args.threshold, "--output", str(args.out / "timeline")]
    for item in args.override:
        command += ["-o", item]
    subprocess.run(command, check=True, env=os.environ)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with open(args.out / "timeline" / "segments.csv", newline="") as f:
        found = list(csv.DictReader(f))
    print(f"video: {truth[-1][1]:.1f} s, {len(truth)} parts; found {len(found)} segments")
    for start, end, cls in truth[:10]:
        print(f"  true  {start:7.2f} {end:7.2f} {cls}")
    for seg in found[:10]:
        print(f"  found {float(seg['start']):7.2f} {float(seg['end']):7.2f} {seg['label']} {seg['score']}")
    print(f"peak RSS of the predict process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
