"""Lifecycle steps that span layers: load a model, test it, and make a predictor; the CLI and ``tsnctl`` call these.

A model comes from a checkpoint (any weights format, see ``weights/load.py``) or an exported ONNX model;
a checkpoint test may run on several processes (``launch.py``), an ONNX one runs here. Both end in the
same test report and the same ``metrics.json`` schema (``engine/reports.summary``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsnctl.config import Config, validate
from tsnctl.data.splits import clip_settings
from tsnctl.deploy.predict import Predictor, onnx_predictor, timed, torch_predictor
from tsnctl.deploy.predict import predict as predict_clips
from tsnctl.engine.evaluate import TestResult, run_test
from tsnctl.engine.loaders import resolve_device
from tsnctl.engine.reports import TestReport, summary, write_report
from tsnctl.errors import UserError
from tsnctl.launch import SINGLE_PROCESS, Layout, evaluate_entry, run_on_ranks
from tsnctl.progress import ProgressFn, no_progress
from tsnctl.weights.load import LoadedModel, load_for_inference


@dataclass
class TestRun:
    result: TestResult
    report: TestReport | None  # None when no report folder was asked for


def load_model(weights: str | Path, cfg: Config | None = None, overrides: list[str] | None = None,
               labels: str | Path | None = None) -> LoadedModel:
    """A whole model for test, export or predict. ``cfg`` (with its overrides applied already) describes the
    network of formats without a config; without it, the config stored with the weights plus ``overrides``."""
    if cfg is not None:
        return load_for_inference(weights, cfg, labels)
    return load_for_inference(weights, None, labels, overrides)


def test(model: LoadedModel, cfg: Config | None = None, list_file: str | Path = "",
         save_scores: str | Path | None = None, report_dir: str | Path | None = None,
         metrics_json: str | Path | None = None, progress: ProgressFn = no_progress) -> TestRun:
    """Test a loaded model in this process with ``cfg.test``'s protocol (default: the model's config)."""
    cfg = cfg or model.cfg
    result = run_test(model.model, cfg, str(list_file), save_scores, progress)
    return _finish(result, model.class_names, report_dir, metrics_json)


def test_command(weights: Path | None, onnx: Path | None, cfg: Config | None, overrides: list[str] | None,
                 values: dict[str, Any], list_file: Path | None = None, save_scores: Path | None = None,
                 report_dir: Path | None = None, metrics_json: Path | None = None, provider: str = "cpu",
                 layout: Layout = SINGLE_PROCESS, ui: Callable[[], Any] | None = None) -> TestRun | None:
    """``tsnctl test``: a checkpoint on one or many processes, or an ONNX model (its own protocol) here.

    ``values`` (``section.key`` -> value, None: keep) apply after loading; the report goes to ``report_dir``,
    default ``<model folder>/test_<list name>``. None on the ranks other than 0 of an outside launcher.
    """
    from tsnctl.deploy.runtime import OnnxClassifier, apply_protocol, class_names, inference_session, model_metadata

    if (weights is None) == (onnx is None):
        raise UserError("give exactly one of -w CHECKPOINT or -m MODEL.onnx")
    if onnx is not None:
        session = inference_session(onnx, provider)
        meta = model_metadata(session, onnx)
        cfg = apply_protocol(cfg or Config(), meta)
        classifier, names = OnnxClassifier(session), class_names(meta)
    else:
        loaded = load_model(weights, cfg, overrides)
        cfg, classifier, names = loaded.cfg, loaded.model, loaded.class_names
    _set_values(cfg, values)
    if onnx is not None:
        if tuple(layout) != SINGLE_PROCESS:
            raise UserError("--gpus/--nproc/--nnodes test checkpoints (-w); an ONNX model (-m) runs in one process")
        with ui() if ui is not None else contextlib.nullcontext(no_progress) as progress:
            result = run_test(classifier, cfg, str(list_file or ""), save_scores, progress)
    else:
        result = run_on_ranks(cfg, layout, evaluate_entry, str(weights), str(list_file or ""),
                              str(save_scores) if save_scores else None, ui=ui)
    if result is None:
        return None
    folder = report_dir or (weights or onnx).parent / f"test_{Path(list_file or cfg.data.test_list).stem}"
    return _finish(result, names, folder, metrics_json)


def predictor(weights: Path | None = None, onnx: Path | None = None, cfg: Config | None = None,
              overrides: list[str] | None = None, provider: str = "cpu", device: str | None = None,
              backend: str = "fast") -> Predictor:
    """Clips -> class scores with a checkpoint's test protocol, or with an exported ONNX model's.
    ``backend``: the CPU inference of a checkpoint (``deploy/infer.py``)."""
    if (weights is None) == (onnx is None):
        raise UserError("give exactly one of -w CHECKPOINT or -m MODEL.onnx")
    with timed("load"):
        if onnx is not None:
            return onnx_predictor(onnx, provider)
        loaded = load_model(weights, cfg, overrides)
        return torch_predictor(loaded.model, clip_settings(loaded.cfg, "test"), loaded.class_names,
                               resolve_device(device or loaded.cfg.train.device), backend)


def predict(model: LoadedModel, clips: list[str | Path], topk: int = 5, device: str = "cpu",
            progress: ProgressFn = no_progress) -> list[dict]:
    """The top-k classes of each clip (a video file or a frame folder) with the model's test protocol.

    One ``{"clip", "topk": [{"label", "index", "prob"}, ...]}`` per clip; an unreadable clip gets ``"error"``.
    """
    runner = torch_predictor(model.model, clip_settings(model.cfg, "test"), model.class_names,
                             resolve_device(device))
    return predict_clips(runner, [str(clip) for clip in clips], topk, progress=progress)


def _set_values(cfg: Config, values: dict[str, Any]) -> None:
    for dotted, value in values.items():
        if value is not None:
            section, key = dotted.split(".")
            setattr(getattr(cfg, section), key, str(value) if isinstance(value, Path) else value)
    validate(cfg)


def _finish(result: TestResult, names: list[str], report_dir: str | Path | None,
            metrics_json: str | Path | None) -> TestRun:
    report = write_report(result, names, report_dir) if report_dir is not None else None
    if metrics_json:
        Path(metrics_json).write_text(json.dumps(summary(result), indent=2) + "\n")
    return TestRun(result, report)
