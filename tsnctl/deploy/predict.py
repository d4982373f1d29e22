"""Classify clips (video files or frame folders) with a checkpoint or an exported ONNX model.

By default both run the model's test protocol: ``num_seg`` centred segments, the configured crops,
features averaged over all views, softmax over the logits. ``preset="paddlevideo"`` instead reproduces
the reference's own predict tool (see ``paddlevideo_views``).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tsnctl.data import transforms as T
from tsnctl.data.dataset import ClipSettings, load_clip, read_clip_frames
from tsnctl.data.decode import VIDEO_EXTENSIONS, count_folder_frames, frame_glob
from tsnctl.data.lists import Sample
from tsnctl.data.sampling import eval_indices
from tsnctl.data.transforms import normalize
from tsnctl.errors import UserError
from tsnctl.models.tsm import set_num_segments
from tsnctl.progress import ProgressFn, no_progress

Runner = Callable[[torch.Tensor], np.ndarray]  # uint8 clips [1, V, 3, H, W] -> logits [1, C]
PRESETS = ("test", "paddlevideo")
PADDLEVIDEO_NUM_SEG = 25  # the reference predict tool's default
STAGE_SECONDS: dict[str, float] = {}  # wall time per stage of this process: "load", "clip", "model" (bench)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Add the wall time of the block to ``STAGE_SECONDS[stage]`` (read by ``tsnctl bench predict``)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS[stage] = STAGE_SECONDS.get(stage, 0.0) + time.perf_counter() - start


@dataclass
class Predictor:
    run: Runner
    settings: ClipSettings  # how clips are sampled and cropped (fmt is set per clip)
    class_names: list[str]


def torch_predictor(model: torch.nn.Module, settings: ClipSettings, class_names: list[str],
                    device: torch.device, backend: str = "fast") -> Predictor:
    """On a CPU, ``backend`` (``deploy/infer.py``): ``fast`` (default, exact) or ``eager``; other devices run
    eager."""
    model = model.eval().to(device)
    set_num_segments(model, settings.num_seg)  # the clip length of a temporal shift
    if device.type == "cpu":
        from tsnctl.deploy.infer import inference_model

        classifier = inference_model(model, backend)

        def run(clips: torch.Tensor) -> np.ndarray:
            with timed("model"):
                return classifier(clips).numpy()

        return Predictor(run, settings, class_names)

    @torch.no_grad()
    def run_on_device(clips: torch.Tensor) -> np.ndarray:
        with timed("model"):
            return model(normalize(clips.to(device))).float().cpu().numpy()

    return Predictor(run_on_device, settings, class_names)


def onnx_predictor(path: str | Path, provider: str = "cpu") -> Predictor:
    """Read an exported model: the protocol and class names come from its metadata."""
    from tsnctl.deploy.runtime import OnnxClassifier, class_names, inference_session, model_metadata

    session = inference_session(path, provider)
    meta = model_metadata(session, path)
    settings = ClipSettings("video", int(meta["tsnctl.num_seg"]), int(meta["tsnctl.short_side"]),
                            int(meta["tsnctl.crop_size"]), crop=meta["tsnctl.crop"],
                            image_template=meta["tsnctl.image_template"])
    model = OnnxClassifier(session, chunked=meta.get("tsnctl.temporal_shift", "none") == "none")

    def run(clips: torch.Tensor) -> np.ndarray:
        with timed("model"):
            return model(clips, normalize).numpy()

    return Predictor(run, settings, class_names(meta))


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


def paddlevideo_views(sample: Sample, fmt: str, num_seg: int, short_side: int = 256, crop_size: int = 224,
                      template: str = "img_{:05d}.jpg") -> torch.Tensor:
    """The reference predict tool's input: uint8 ``[10*num_seg, 3, crop, crop]`` (runners normalize).

    ``num_seg`` centred segments; every frame stretched to a fixed 4:3 size (341x256; aspect ratio not
    kept) unless its short side is already ``short_side``; TenCrop. Its test pipeline keeps
    the aspect ratio instead, so the two give slightly different scores on the same clip.
    """
    def index_fn(num_frames: int) -> list[int]:
        return eval_indices(num_frames, num_seg)

    frames = T.stretch(read_clip_frames(sample, fmt, index_fn, template), short_side)
    return T.to_tensor(T.ten_crop(frames, crop_size))


def clip_views(predictor: Predictor, clip: str, preset: str = "test", num_seg: int | None = None) -> torch.Tensor:
    """The views of one clip ``[V, 3, H, W]`` under ``preset``; ``num_seg`` overrides the preset's count."""
    s = predictor.settings
    sample, fmt = clip_sample(clip, s.image_template)
    match preset:
        case "test":
            settings = ClipSettings(fmt, num_seg or s.num_seg, s.short_side, s.crop_size, crop=s.crop,
                                    image_template=s.image_template)
            return load_clip(sample, settings, np.random.default_rng(0))
        case "paddlevideo":
            return paddlevideo_views(sample, fmt, num_seg or PADDLEVIDEO_NUM_SEG, s.short_side, s.crop_size,
                                     s.image_template)
    raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def predict(predictor: Predictor, clips: list[str], topk: int = 5, labels: list[str] | None = None,
            progress: ProgressFn = no_progress, preset: str = "test", num_seg: int | None = None) -> list[dict]:
    """One ``{"clip", "topk": [{"label", "index", "prob"}, ...]}`` per clip, most likely class first.

    A clip that cannot be read gets ``{"clip", "error": "<one line naming the file>", "topk": []}`` and
    the other clips are still classified.
    """
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if num_seg is not None and num_seg < 1:
        raise UserError("--num-seg must be at least 1")
    names = labels or predictor.class_names
    results = []
    for done, clip in enumerate(clips, start=1):
        try:
            with timed("clip"):
                views = clip_views(predictor, clip, preset, num_seg)
        except UserError as exc:
            results.append({"clip": str(clip), "error": str(exc), "topk": []})
            progress("predict", done, len(clips), "")
            continue
        logits = predictor.run(views[None])[0]
        results.append({"clip": str(clip), "topk": topk_entries(logits, names, topk)})
        progress("predict", done, len(clips), "")
    return results


def topk_entries(logits: np.ndarray, names: list[str], topk: int) -> list[dict]:
    """``[{"label", "index", "prob"}, ...]`` for the ``topk`` most likely classes of logits ``[C]``."""
    if len(names) != len(logits):
        raise UserError(f"{len(names)} class names given for a model with {len(logits)} classes")
    probs = torch.softmax(torch.from_numpy(logits).double(), dim=0)
    top = probs.topk(min(topk, len(probs)))
    return [{"label": names[i], "index": int(i), "prob": float(p)}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def expand_clips(paths: list[str | Path], template: str = "img_{:05d}.jpg") -> list[str]:
    """Clips to classify: a frame folder or a video stays as given; a ``.txt`` file is a list of clips
    (``<path>`` or ``<path> <label>`` lines, relative to the list's folder, as a video list); any other
    folder stands for every video file under it (recursively, sorted). A folder with neither is an error."""
    clips: list[str] = []
    for path in map(Path, paths):
        if path.suffix == ".txt" and path.is_file():
            clips.extend(_listed_clips(path))
            continue
        if not path.is_dir() or any(path.glob(frame_glob(template))):
            clips.append(str(path))
            continue
        videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not videos:
            raise UserError(f"{path}: neither a frame folder ({template.format(1)} ...) nor a folder with video "
                            f"files ({', '.join(VIDEO_EXTENSIONS)})")
        clips.extend(map(str, videos))
    return clips


def _listed_clips(list_file: Path) -> list[str]:
    from tsnctl.textfiles import read_utf8

    clips = []
    for line in read_utf8(list_file, "list file").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 1 and fields[-1].lstrip("-").isdigit():
            fields = fields[:-1]  # a video list's label
        clips.append(str(list_file.parent / " ".join(fields)))
    if not clips:
        raise UserError(f"{list_file}: the list holds no clips")
    return clips


def write_predictions_csv(rows: list[dict], path: str | Path, key_columns: tuple[str, ...] = ("clip",)) -> None:
    """One line per prediction: the key columns (``clip``, or ``frame, time`` for a stream), then
    ``label_1, index_1, prob_1, label_2, ...`` most likely first."""
    depth = max((len(r["topk"]) for r in rows), default=0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*key_columns, *(f"{c}_{k}" for k in range(1, depth + 1) for c in ("label", "index", "prob"))])
        for row in rows:
            writer.writerow([*(row[c] for c in key_columns),
                             *(v for e in row["topk"] for v in (e["label"], e["index"], f"{e['prob']:.6f}"))])

