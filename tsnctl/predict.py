"""Classify clips (video files or frame folders) with a checkpoint or an exported ONNX model.

Both run the model's test protocol: ``num_seg`` centred segments, the configured crops, features
averaged over all views, softmax over the logits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tsnctl.data.dataset import ClipSettings, load_clip
from tsnctl.data.decode import VIDEO_EXTENSIONS, count_folder_frames
from tsnctl.data.lists import Sample
from tsnctl.data.transforms import normalize
from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress

Runner = Callable[[torch.Tensor], np.ndarray]  # uint8 clips [1, V, 3, H, W] -> logits [1, C]


@dataclass
class Predictor:
    run: Runner
    settings: ClipSettings  # how clips are sampled and cropped (fmt is set per clip)
    class_names: list[str]


def torch_predictor(model: torch.nn.Module, settings: ClipSettings, class_names: list[str],
                    device: torch.device) -> Predictor:
    model = model.eval().to(device)

    @torch.no_grad()
    def run(clips: torch.Tensor) -> np.ndarray:
        return model(normalize(clips.to(device))).float().cpu().numpy()

    return Predictor(run, settings, class_names)


def onnx_predictor(path: str | Path) -> Predictor:
    """Read an exported model: the protocol and class names come from its metadata."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX model not found")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for bad files
        raise UserError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "tsnctl.class_names" not in meta:
        raise UserError(f"{path}: no tsnctl metadata; export the model with 'tsnctl export'")
    settings = ClipSettings("video", int(meta["tsnctl.num_seg"]), int(meta["tsnctl.short_side"]),
                            int(meta["tsnctl.crop_size"]), crop=meta["tsnctl.crop"],
                            image_template=meta["tsnctl.image_template"])

    def run(clips: torch.Tensor) -> np.ndarray:
        return session.run(None, {"clips": normalize(clips).numpy()})[0]

    return Predictor(run, settings, json.loads(meta["tsnctl.class_names"]))


def clip_sample(clip: str | Path, template: str) -> tuple[Sample, str]:
    """A clip path as a Sample plus its format: a folder of frames or a video file."""
    path = Path(clip)
    if path.is_dir():
        return Sample(str(clip), path, -1, count_folder_frames(path, template)), "frames"
    if not path.exists():
        raise UserError(f"{path}: no such video file or frame folder")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise UserError(f"{path}: not a video file ({', '.join(VIDEO_EXTENSIONS)}) or a frame folder")
    return Sample(str(clip), path, -1), "video"


def predict(predictor: Predictor, clips: list[str], topk: int = 5, labels: list[str] | None = None,
            progress: ProgressFn = no_progress) -> list[dict]:
    """One ``{"clip", "topk": [{"label", "index", "prob"}, ...]}`` per clip, most likely class first."""
    names = labels or predictor.class_names
    results = []
    for done, clip in enumerate(clips, start=1):
        sample, fmt = clip_sample(clip, predictor.settings.image_template)
        settings = ClipSettings(fmt, predictor.settings.num_seg, predictor.settings.short_side,
                                predictor.settings.crop_size, crop=predictor.settings.crop,
                                image_template=predictor.settings.image_template)
        views = load_clip(sample, settings, np.random.default_rng(0))
        logits = predictor.run(views[None])[0]
        if len(names) != len(logits):
            raise UserError(f"{len(names)} class names given for a model with {len(logits)} classes")
        probs = torch.softmax(torch.from_numpy(logits).double(), dim=0)
        top = probs.topk(min(topk, len(probs)))
        results.append({"clip": str(clip), "topk": [
            {"label": names[i], "index": int(i), "prob": float(p)} for p, i in zip(top.values, top.indices, strict=True)
        ]})
        progress("predict", done, len(clips), "")
    return results
