"""Run exported ONNX models with onnxruntime on a chosen execution provider.

``cpu`` works everywhere; ``cuda`` and ``tensorrt`` need the ``onnxruntime-gpu`` build (and CUDA /
TensorRT libraries) and fail with one line naming what is missing instead of silently falling back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from tsnctl.config import Config
from tsnctl.errors import UserError

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
        session = ort.InferenceSession(str(path), providers=[p for p in PROVIDERS[provider] if p in available])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for bad files and drivers
        raise UserError(f"{path}: cannot load with {wanted} ({str(exc).strip().splitlines()[0][:200]})") from None
    if session.get_providers()[0] != wanted:  # onnxruntime falls back quietly when a provider fails to start
        raise UserError(f"{path}: {wanted} did not start (running on {session.get_providers()[0]} instead); "
                        "check the CUDA/TensorRT installation")
    return session


def model_metadata(session: ort.InferenceSession, path: str | Path) -> dict[str, str]:
    """The ``tsnctl.*`` metadata written by ``tsnctl export``."""
    meta = session.get_modelmeta().custom_metadata_map
    if "tsnctl.class_names" not in meta:
        raise UserError(f"{path}: no tsnctl metadata; export the model with 'tsnctl export'")
    return meta


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


class OnnxClassifier(torch.nn.Module):
    """An ONNX model behind the torch model interface: ``forward(clips [N,V,3,H,W]) -> logits [N,C]``.

    Lets ``evaluate``/``run_test`` score an exported model exactly as they score a checkpoint.
    """

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__()
        self.session = session
        self.input_type = np.float16 if "float16" in session.get_inputs()[0].type else np.float32

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {"clips": clips.cpu().numpy().astype(self.input_type)})[0]
        return torch.from_numpy(logits.astype(np.float32))
