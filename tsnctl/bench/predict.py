"""``bench predict``: ``tsnctl predict`` on one clip end to end, one cold process per run, as a user runs it.

Variants run alternately (eager, fast[, onnx], eager, fast, ...) so that load from other processes on the
machine hits all alike; the medians and their ratio to ``eager`` (the path of tsnctl <= 0.1: the model as
trained, NCHW, normalized float views, all in one batch) are reported. Each child records the wall time of
its stages (``tsnctl.deploy.predict.STAGE_SECONDS``); start-up is the rest of the wall time: the interpreter,
imports, option parsing and printing. Peak RSS is the child's own (``os.wait4``'s rusage).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress

STAGES = ("start-up", "load", "clip", "model")  # clip: decode + transforms
# The child runs the CLI in its own process, as a user does (``cli/child.py``).
CHILD = ("import sys\n"
         "from tsnctl.cli.child import predict_child\n"
         "predict_child(sys.argv[1], sys.argv[2:])\n")


@dataclass
class PredictRun:
    variant: str
    wall_s: float
    stages_s: dict[str, float]
    max_rss_mb: float


@dataclass
class PredictVariant:
    name: str
    args: list[str]
    median_s: dict[str, float] = field(default_factory=dict)  # "wall" and each stage
    max_rss_mb: float = 0.0
    ratio_to_eager: float | None = None  # median wall time / eager's


@dataclass
class PredictBench:
    clip: str
    repeats: int
    variants: list[PredictVariant]
    runs: list[PredictRun]


def run_once(variant: PredictVariant, result_file: Path) -> PredictRun:
    """One cold ``tsnctl predict`` process; its wall time, stage times and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(result_file), *variant.args, "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        last = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise UserError(f"predict ({variant.name}) failed with exit code {proc.returncode}: {last[0][:300]}",
                        exit_code=1)
    stages = json.loads(result_file.read_text())
    stages["start-up"] = wall - sum(stages.values())
    return PredictRun(variant.name, wall, stages, usage.ru_maxrss / 1024)  # KiB on Linux


def bench_predict(clip: Path, weights: Path, config: Path | None, onnx: Path | None, num_seg: int | None,
                  repeats: int, progress: ProgressFn = no_progress) -> PredictBench:
    """Alternate eager, fast (and the ONNX model) ``repeats`` times each on ``clip``."""
    if not clip.exists():
        raise UserError(f"{clip}: no such video file or frame folder")
    if repeats < 1:
        raise UserError("--repeats must be at least 1")
    common = [str(clip), *(["-c", str(config)] if config else []), *(["--num-seg", str(num_seg)] if num_seg else [])]
    variants = [PredictVariant("eager", [*common, "-w", str(weights), "--backend", "eager"]),
                PredictVariant("fast", [*common, "-w", str(weights)])]
    if onnx:
        variants.append(PredictVariant("onnx", [*common, "-m", str(onnx)]))
    runs: list[PredictRun] = []
    with tempfile.TemporaryDirectory(prefix="tsnctl-bench-predict-") as tmp:
        for _ in range(repeats):
            for variant in variants:
                runs.append(run_once(variant, Path(tmp) / "stages.json"))
                progress("bench predict", len(runs), repeats * len(variants), variant.name)
    for variant in variants:
        mine = [run for run in runs if run.variant == variant.name]
        variant.median_s = {"wall": statistics.median(run.wall_s for run in mine),
                            **{s: statistics.median(run.stages_s.get(s, 0.0) for run in mine) for s in STAGES}}
        variant.max_rss_mb = max(run.max_rss_mb for run in mine)
        variant.ratio_to_eager = variant.median_s["wall"] / variants[0].median_s["wall"]
    return PredictBench(str(clip), repeats, variants, runs)
