"""INT8 export: onnxruntime static quantization, calibrated on real clips and checked on a validation list.

The fp32 model from ``to_onnx`` is quantized in QDQ format (int8 weights per output channel, uint8
activations with ranges from MinMax calibration). Calibration clips go through the test protocol's
decoding, crops and normalization, as the deployed model sees them. Then the fp32 and INT8 models score the
same validation clips (decoded once) and the INT8 file is only moved into place when its top-1 is at most
``max_drop`` points below fp32's: a refused model leaves no file behind.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from tsnctl.data.splits import clip_settings
from tsnctl.deploy.export import to_onnx
from tsnctl.engine.evaluate import evaluate
from tsnctl.engine.loaders import clip_loader, model_input, read_split
from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress
from tsnctl.weights.load import LoadedModel

log = logging.getLogger("tsnctl")
CALIB_CLIPS = 100  # MinMax ranges settle after a few dozen clips; more only costs time
MAX_DROP_LIMIT = 100.0  # |--max-drop| beyond 100 points means nothing


@dataclass
class Int8Report:
    path: Path
    fp32_top1: float
    int8_top1: float
    videos: int  # readable validation videos both were scored on
    calib_clips: int
    fp32_mb: float
    int8_mb: float

    @property
    def drop(self) -> float:
        return self.fp32_top1 - self.int8_top1


def check_max_drop(max_drop: float) -> float:
    if not math.isfinite(max_drop) or abs(max_drop) > MAX_DROP_LIMIT:
        raise UserError(f"--max-drop {max_drop}: expected top-1 points between -{MAX_DROP_LIMIT:g} and "
                        f"{MAX_DROP_LIMIT:g}")
    return max_drop


def to_int8_onnx(loaded: LoadedModel, output: str | Path, calib_list: str | Path, val_list: str | Path,
                 max_drop: float = 1.0, calib_clips: int = CALIB_CLIPS,
                 progress: ProgressFn = no_progress) -> Int8Report:
    """Export ``loaded`` to fp32 ONNX (in a temporary folder), quantize it to INT8, compare their top-1 on
    ``val_list`` and write ``output`` only when the drop is at most ``max_drop`` points (else exit 1)."""
    check_max_drop(max_drop)
    if calib_clips < 1:
        raise UserError(f"--calib-clips {calib_clips}: must be at least 1")
    cfg = loaded.cfg
    calib = _spread(read_split(cfg, str(calib_list), "calib"), calib_clips)
    val = read_split(cfg, str(val_list), "val")  # both lists are checked before any work
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tsnctl-int8-") as tmp:
        fp32 = to_onnx(loaded, Path(tmp) / "fp32.onnx").path
        int8 = Path(tmp) / "int8.onnx"
        chunked = not cfg.model.temporal_shift  # views are independent until the average: run them in chunks
        _quantize(fp32, int8, _loader(cfg, calib, 1), len(calib), chunked, progress)
        fp32_top1, int8_top1, videos = _compare(fp32, int8, _loader(cfg, val, cfg.test.batch_size), chunked,
                                                progress)
        report = Int8Report(output, fp32_top1, int8_top1, videos, len(calib), fp32.stat().st_size / 2**20,
                            int8.stat().st_size / 2**20)
        if report.drop > max_drop:
            raise UserError(f"INT8 top-1 {int8_top1:.2f}% is {report.drop:.2f} points below fp32 "
                            f"{fp32_top1:.2f}% on {val_list} ({videos} videos), over --max-drop {max_drop:g}; "
                            f"{output} not written", exit_code=1)
        partial = output.with_name(f".{output.name}.partial")
        _write_with_metadata(int8, partial, report)
        os.replace(partial, output)
    return report


def _spread(samples: list, count: int) -> list:
    """At most ``count`` samples evenly spread over the list (lists are often sorted by class)."""
    if len(samples) <= count:
        return samples
    return [samples[i] for i in np.linspace(0, len(samples) - 1, count).round().astype(int)]


def _loader(cfg, samples: list, batch_size: int):
    return clip_loader(samples, clip_settings(cfg, "test"), batch_size, cfg.data.num_workers)


def _quantize(fp32: Path, int8: Path, loader, total: int, chunked: bool, progress: ProgressFn) -> None:
    """``chunked``: calibrate on ``VIEWS_PER_RUN`` views at a time, so the calibration session's activations
    stay small whatever the test protocol's view count (as ``predict -m`` runs them)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tsnctl.deploy.runtime import VIEWS_PER_RUN

    def inputs():
        for done, (clips, labels, bad) in enumerate(loader, start=1):
            progress("int8 calibrate", done, total, f"{len(bad)} unreadable" if bad else "")
            if len(labels):
                views = model_input(clips, torch.device("cpu")).numpy()
                step = VIEWS_PER_RUN if chunked else views.shape[1]
                yield from ({"clips": views[:, i:i + step]} for i in range(0, views.shape[1], step))

    class ClipReader(CalibrationDataReader):
        """Normalized test views ``[1, V, 3, H, W]`` of each readable calibration clip (or chunks of them)."""

        def __init__(self) -> None:
            self.inputs = inputs()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.inputs, None)

    prepared = fp32.with_name("prepared.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # the quantizer logs a line per tensor on the root logger
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # folds constants, infers shapes
        quantize_static(str(prepared), str(int8), ClipReader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        # U8S8 (uint8 activations, int8 weights): onnxruntime's x86 kernels (VPMADDUBSW, VNNI) take it directly;
        # S8S8 measured slower than fp32 here (demo ResNet-18, 80 views: u8s8 75 ms, s8s8 368, fp32 302).
        # No CalibMaxIntermediateOutputs: onnxruntime 1.32 drops the collected ranges at that count instead of
        # merging them (the last partial group alone set the ranges). Kept per input are ReduceMin/ReduceMax
        # results, not activations, so memory grows only by a few numbers per tensor and clip.
    finally:
        root.setLevel(level)


def _compare(fp32: Path, int8: Path, loader, chunked: bool, progress: ProgressFn) -> tuple[float, float, int]:
    """Top-1 (%) of both models on the same decoded clips, and the number of readable clips."""
    from tsnctl.deploy.runtime import OnnxClassifier, inference_session

    pair = _Pair(OnnxClassifier(inference_session(fp32), chunked), OnnxClassifier(inference_session(int8), chunked))
    logits, labels, _ = evaluate(pair, loader, torch.device("cpu"), progress, "int8 check")
    if not len(labels):
        raise UserError("no validation clip could be read", exit_code=1)
    classes = logits.shape[1] // 2
    tops = [100.0 * float((part.argmax(1) == labels).float().mean()) for part in logits.split(classes, dim=1)]
    return tops[0], tops[1], len(labels)


class _Pair(torch.nn.Module):
    """Two classifiers on the same input: logits ``[N, 2C]`` (first's, then second's)."""

    def __init__(self, first: torch.nn.Module, second: torch.nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.first(clips), self.second(clips)], dim=1)


def _write_with_metadata(int8: Path, path: Path, report: Int8Report) -> None:
    """Keep the fp32 model's ``tsnctl.*`` metadata (quantization may drop it) and record the check."""
    proto = onnx.load(str(int8))
    fp32_meta = {p.key: p.value for p in onnx.load(str(int8.with_name("fp32.onnx")), load_external_data=False)
                 .metadata_props}
    meta = {**fp32_meta, **{p.key: p.value for p in proto.metadata_props}, "tsnctl.precision": "int8",
            "tsnctl.int8_check": f"top-1 fp32 {report.fp32_top1:.2f}%, int8 {report.int8_top1:.2f}% on "
                                 f"{report.videos} videos; calibrated on {report.calib_clips} clips"}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.save(proto, str(path))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
