"""Export a TSN to ONNX and verify the file against the torch model with onnxruntime.

The graph takes ``clips [N, V, 3, H, W]`` (N and V dynamic; V = segments x crops of the test protocol)
and returns ``logits [N, num_classes]``. Class names and preprocessing settings go into the model's
metadata so ``predict -m`` needs nothing else. A temporal shift (TSM) exports as slices and concats over
``[-1, num_seg, C, H, W]``: the views must stay a multiple of the test ``num_seg``.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from tsnctl.data.presets import VIEWS_PER_FRAME
from tsnctl.errors import UserError
from tsnctl.models.tsm import set_num_segments
from tsnctl.weights.load import LoadedModel

OPSET = 17
log = logging.getLogger("tsnctl")


@dataclass
class ExportReport:
    path: Path
    input_shape: list[int | str]
    max_abs_diff: float  # onnxruntime vs torch on random clips


FP16_TOLERANCE = 1e-2  # max |fp16 - fp32| logit difference, relative to the largest |logit| (>= 1)


def to_onnx(loaded: LoadedModel, output: str | Path, opset: int = OPSET, fp16: bool = False) -> ExportReport:
    """Write ``output``, check it with ``onnx.checker`` and compare it with torch through onnxruntime.

    With ``fp16`` the weights, input and output are half precision (half the file, faster on GPUs); the
    check then compares with the fp32 torch model within ``FP16_TOLERANCE`` and requires the same top-1.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    cfg = loaded.cfg
    model = loaded.model.eval().cpu()
    set_num_segments(model, cfg.test.num_seg)  # a temporal shift runs over the test clip length
    views = cfg.test.num_seg * VIEWS_PER_FRAME[cfg.test.crop]
    example = torch.randn(2, views, 3, cfg.data.crop_size, cfg.data.crop_size)
    exported = copy.deepcopy(model).half() if fp16 else model
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, but it needs no extra
        # packages and exports the plain ResNet + mean graph exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(exported, (example.half() if fp16 else example,), str(output), dynamo=False,
                          opset_version=opset, input_names=["clips"], output_names=["logits"],
                          dynamic_axes={"clips": {0: "batch", 1: "views"}, "logits": {0: "batch"}})
    proto = onnx.load(str(output))
    metadata = {**export_metadata(loaded), "tsnctl.precision": "fp16" if fp16 else "fp32"}
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(output))

    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    # Besides the traced example: another batch size, and the same clips with their views reversed, which
    # changes a temporal shift's output; a shift traced as a constant or a fixed batch would fail here.
    fresh = torch.randn(3, views, 3, cfg.data.crop_size, cfg.data.crop_size)
    batches = [example, fresh, fresh.flip(1)]
    with torch.no_grad():
        expected = [model(clips).numpy() for clips in batches]
    diff, ok = 0.0, True
    for clips, want in zip(batches, expected, strict=True):
        got = session.run(None, {"clips": (clips.half() if fp16 else clips).numpy()})[0].astype(np.float32)
        batch_diff = float(np.abs(got - want).max())
        if fp16:
            scale = max(1.0, float(np.abs(want).max()))
            ok = ok and batch_diff <= FP16_TOLERANCE * scale and bool((got.argmax(1) == want.argmax(1)).all())
        else:
            ok = ok and batch_diff < 1e-3
        diff = max(diff, batch_diff)
    if not ok:
        raise UserError(f"{output}: onnxruntime output differs from torch by {diff:.3g}", exit_code=1)
    if cfg.model.temporal_shift:
        log.info("temporal shift: reversing the views changes the logits by up to %.3g; onnxruntime follows "
                 "torch on both", float(np.abs(expected[1] - expected[2]).max()))
    return ExportReport(output, ["batch", views, 3, cfg.data.crop_size, cfg.data.crop_size], diff)


def export_metadata(loaded: LoadedModel) -> dict[str, str]:
    cfg = loaded.cfg
    return {
        "tsnctl.class_names": json.dumps(loaded.class_names),
        "tsnctl.num_seg": str(cfg.test.num_seg),
        "tsnctl.crop": cfg.test.crop,
        "tsnctl.short_side": str(cfg.data.short_side),
        "tsnctl.crop_size": str(cfg.data.crop_size),
        "tsnctl.image_template": cfg.data.image_template,
        "tsnctl.backbone": cfg.model.backbone,
        "tsnctl.temporal_shift": (f"1/{cfg.model.shift_div} channels each way over "
                                  f"{cfg.model.shift_segments or cfg.test.num_seg} segments"
                                  if cfg.model.temporal_shift else "none"),
        "tsnctl.normalize": "x/255, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), RGB",
    }
