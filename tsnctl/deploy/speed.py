"""``bench onnx``: exported models (fp32, fp16, INT8 ...) side by side in onnxruntime on this machine.

All models get the same clips of their shared input shape and run alternately (A, B, A, B, ...), so load
from other processes hits each alike; the median milliseconds per clip and the ratio to the first model are
reported, with the machine's load average before and after. It lives in deploy/ because it times the
sessions of ``deploy.runtime`` (threads, optimizations) exactly as ``predict -m`` and ``serve`` open them.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsnctl.data.presets import VIEWS_PER_FRAME
from tsnctl.deploy.runtime import inference_session, model_metadata, physical_cores
from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress


@dataclass
class OnnxCase:
    path: str
    precision: str  # the model's tsnctl.precision metadata
    size_mb: float
    median_ms: float = 0.0  # per call of `batch` clips
    clips_per_s: float = 0.0
    speedup: float = 1.0  # first model's median / this one's


@dataclass
class OnnxBench:
    input_shape: list[int]
    repeats: int
    threads: int
    load_before: float  # 1-minute load average
    load_after: float
    cases: list[OnnxCase] = field(default_factory=list)


def bench_onnx(models: list[Path], batch: int = 1, repeats: int = 20, progress: ProgressFn = no_progress) -> OnnxBench:
    """Time each model on the same ``batch`` random clips, alternating, ``repeats`` times each."""
    if not models:
        raise UserError("give one or more ONNX models from 'tsnctl export'")
    if not 1 <= batch <= 64 or not 1 <= repeats <= 10_000:
        raise UserError("--batch must be 1 to 64 and --repeats 1 to 10000")
    sessions, shapes, cases = [], set(), []
    for path in models:
        session = inference_session(path)
        meta = model_metadata(session, path)
        size = int(meta["tsnctl.crop_size"])
        shapes.add((int(meta["tsnctl.num_seg"]) * VIEWS_PER_FRAME[meta["tsnctl.crop"]], size))
        dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
        sessions.append((session, dtype))
        cases.append(OnnxCase(str(path), meta.get("tsnctl.precision", "fp32"), path.stat().st_size / 2**20))
    if len(shapes) > 1:
        raise UserError(f"the models take different inputs (views, size): {sorted(shapes)}; compare exports of "
                        "one checkpoint")
    views, size = shapes.pop()
    clips = np.random.default_rng(0).standard_normal((batch, views, 3, size, size)).astype(np.float32)
    result = OnnxBench([batch, views, 3, size, size], repeats, physical_cores(), os.getloadavg()[0], 0.0, cases)
    for session, dtype in sessions:  # warm-up: first-run allocations and kernel choices
        session.run(None, {"clips": clips.astype(dtype)})
    times: list[list[float]] = [[] for _ in sessions]
    for done in range(1, repeats + 1):
        for (session, dtype), spent in zip(sessions, times, strict=True):
            inputs = {"clips": clips.astype(dtype)}
            start = time.perf_counter()
            session.run(None, inputs)
            spent.append(time.perf_counter() - start)
        progress("bench onnx", done, repeats, "")
    result.load_after = os.getloadavg()[0]
    for case, spent in zip(cases, times, strict=True):
        case.median_ms = 1000 * statistics.median(spent)
        case.clips_per_s = 1000 * batch / case.median_ms
        case.speedup = statistics.median(times[0]) / statistics.median(spent)
    return result
