"""Run exported ONNX models with onnxruntime on a chosen execution provider.

``cpu`` works everywhere; ``cuda`` and ``tensorrt`` need the ``onnxruntime-gpu`` build (and CUDA /
TensorRT libraries) and fail with one line naming what is missing instead of silently falling back.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from tsnctl.config import Config
from tsnctl.errors import UserError

ort.set_default_logger_severity(4)  # errors reach the user as one UserError line, not onnxruntime's log too

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def inference_session(path: str | Path, provider: str = "cpu") -> ort.InferenceSession:
    """An onnxruntime session for ``path`` whose first provider is the one asked for."""
    if provider not in PROVIDERS:
        raise UserError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[provider][0]
    available = ort.get_available_providers()
    if wanted not in available:
        raise UserError(f"onnxruntime here has no {wanted} (available: {', '.join(available)}); "
                        f"--provider {provider} needs the onnxruntime-gpu package and a CUDA GPU")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX model not found")
    try:
        session = ort.InferenceSession(str(path), session_options(),
                                       providers=[p for p in PROVIDERS[provider] if p in available])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for bad files and drivers
        raise UserError(f"{path}: cannot load with {wanted} ({str(exc).strip().splitlines()[0][:200]})") from None
    if session.get_providers()[0] != wanted:  # onnxruntime falls back quietly when a provider fails to start
        raise UserError(f"{path}: {wanted} did not start (running on {session.get_providers()[0]} instead); "
                        "check the CUDA/TensorRT installation")
    return session


def physical_cores() -> int:
    """Cores this process may run on, counting hyper-threads of one core once (a second thread per core
    only contends for the same vector units in a convolution)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def session_options() -> ort.SessionOptions:
    """One intra-op thread per physical core, sequential execution (a ResNet is a chain: parallel branches
    would only oversubscribe the cores), every graph optimization (conv + BN + ReLU fusion, NCHWc layout)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see OMP_WAIT_POLICY in predict
    options.enable_cpu_mem_arena = False  # the arena keeps every chunk's peak: -40 MB RSS, same speed
    return options


def model_metadata(session: ort.InferenceSession, path: str | Path) -> dict[str, str]:
    """The ``tsnctl.*`` metadata written by ``tsnctl export``."""
    meta = session.get_modelmeta().custom_metadata_map
    if "tsnctl.class_names" not in meta:
        raise UserError(f"{path}: no tsnctl metadata; export the model with 'tsnctl export'")
    _check_metadata(meta, path)
    return meta


# Bounds on what an exported model may ask the torch side to prepare: beyond them a forged file would make
# us allocate absurd input tensors before onnxruntime even runs.
_META_INTS = {"tsnctl.num_seg": 1000, "tsnctl.short_side": 8192, "tsnctl.crop_size": 8192}


def _check_metadata(meta: dict[str, str], path: str | Path) -> None:
    """Every ``tsnctl.*`` value parses and is in range; a malformed one names the key and the file."""
    def bad(key: str, wanted: str) -> UserError:
        return UserError(f"{path}: metadata {key} is {meta.get(key, '(missing)')!r}; expected {wanted}")

    try:
        names = json.loads(meta["tsnctl.class_names"])
    except ValueError:
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad("tsnctl.class_names", "a JSON list of class names")
    for key, limit in _META_INTS.items():
        if not meta.get(key, "").isdigit() or not 1 <= int(meta[key]) <= limit:
            raise bad(key, f"an integer from 1 to {limit}")
    if int(meta["tsnctl.crop_size"]) > int(meta["tsnctl.short_side"]):
        raise bad("tsnctl.crop_size", "at most tsnctl.short_side")
    if meta.get("tsnctl.crop") not in ("ten", "three", "center"):
        raise bad("tsnctl.crop", "ten, three or center")
    template = meta.get("tsnctl.image_template", "")
    try:  # a width of 4+ digits ({:999999999d}) would build a gigabyte-long name
        if len(template) > 255 or re.search(r"\{[^}]*\d{4}", template) or template.format(1) == template:
            raise ValueError
    except (ValueError, IndexError, KeyError, AttributeError):
        raise bad("tsnctl.image_template", "a file name pattern such as img_{:05d}.jpg") from None


def apply_protocol(cfg: Config, meta: dict[str, str]) -> Config:
    """Set the test protocol and input size stored in an exported model on ``cfg`` (in place)."""
    cfg.test.num_seg = int(meta["tsnctl.num_seg"])
    cfg.test.crop = meta["tsnctl.crop"]
    cfg.data.short_side = int(meta["tsnctl.short_side"])
    cfg.data.crop_size = int(meta["tsnctl.crop_size"])
    cfg.data.image_template = meta["tsnctl.image_template"]
    cfg.model.num_classes = len(class_names(meta))
    cfg.train.device = "cpu"  # onnxruntime picks its own device; the torch side only prepares inputs
    return cfg


def class_names(meta: dict[str, str]) -> list[str]:
    return json.loads(meta["tsnctl.class_names"])


VIEWS_PER_RUN = 8  # ResNet-50, 80 views on 2 loaded cores: as fast as all at once; peak RSS 940 MB (16: 1115)


class OnnxClassifier(torch.nn.Module):
    """An ONNX model behind the torch model interface: ``forward(clips [N,V,3,H,W]) -> logits [N,C]``.

    Lets ``evaluate``/``run_test`` score an exported model exactly as they score a checkpoint. With
    ``chunked`` (a TSN without temporal shift), the views of a clip run ``VIEWS_PER_RUN`` at a time: the
    head is an average then an affine layer, so the view-weighted mean of the chunks' logits is the clip's.
    """

    def __init__(self, session: ort.InferenceSession, chunked: bool = False) -> None:
        super().__init__()
        self.session = session
        self.chunked = chunked
        self.input_type = np.float16 if "float16" in session.get_inputs()[0].type else np.float32

    def forward(self, clips: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> torch.Tensor:
        """``prepare`` (e.g. ``normalize``) runs on each chunk, so no float copy of all views is made."""
        views = clips.shape[1]
        step = VIEWS_PER_RUN if self.chunked else views
        total = None
        for start in range(0, views, step):
            chunk = clips[:, start:start + step]
            chunk = prepare(chunk) if prepare else chunk
            part = self._run(chunk).astype(np.float32) * (chunk.shape[1] / views)
            total = part if total is None else total + part
        return torch.from_numpy(total)

    def _run(self, chunk: torch.Tensor) -> np.ndarray:
        try:
            return self.session.run(None, {"clips": chunk.cpu().numpy().astype(self.input_type, copy=False)})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's Fail/RuntimeException, e.g. an absurd allocation
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{getattr(self.session, '_model_path', 'ONNX model')}: onnxruntime failed "
                            f"({reason[-200:]})", exit_code=1) from None
