"""``bench data``: per-sample cost of the data path by stage, and its speed against the reference's.

Everything runs in this process on one thread (OpenCV and torch pinned to 1) and is timed in CPU time
(``time.process_time``), so the numbers are per core and other processes on the machine do not count
against either side; the two pipelines alternate sample by sample so that contention for caches and
memory bandwidth hits both alike.
The tsnctl side counts what a loader worker and the engine do per sample: a worker's whole batch
(``ClipDataset.load_batch`` with its buffer in shared memory, as in a worker: read, decode, and the views
written into the batch; each batch then goes to ``batch_buffers.received`` as in the main process, so the
worker's buffers are reused as in a loader) and its share of the one float normalization per batch (on the
CPU here; on a GPU machine that step moves to the GPU). The reference's side counts its per-image path and
its share of stacking the float32 batch.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from tsnctl.bench import peers, synthetic
from tsnctl.config import Config
from tsnctl.data import video
from tsnctl.data.batch_buffers import received
from tsnctl.data.dataset import ClipDataset, ClipSettings
from tsnctl.data.decode import decode_jpeg
from tsnctl.data.lists import Sample, read_list
from tsnctl.data.presets import eval_preset, train_preset
from tsnctl.data.sampling import frame_indices
from tsnctl.data.splits import clip_settings
from tsnctl.data.transforms import scale
from tsnctl.data.views import FrameViews
from tsnctl.engine.loaders import model_input, resolve_device
from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress

MODES = ("train", "valid", "test")
FORMATS = ("frames", "video")


@dataclass
class DataCase:
    fmt: str
    mode: str
    views: str  # e.g. "25 x 10 = 250"
    stages_ms: dict[str, float]  # read, decode, transform, normalize: ms per sample
    loader_ms: float  # ms per sample in a loader worker: its share of building a whole batch
    overhead_ms: float  # loader_ms minus read + decode + transform: what building the batch adds
    normalize_ms: float  # its share of the batch normalization on the bench's device (CPU: CPU time;
    # CUDA: wall time of the pinned host-to-device copy and normalization, synchronized)
    baseline_ms: float | None  # the reference's per-image path (normalization included) on the same clips
    note: str = ""
    speedup: float | None = None  # baseline / (loader + normalize): both on the CPU
    speedup_loader: float | None = None  # baseline / loader: the CPU work per sample when a GPU normalizes


@dataclass
class DataBench:
    source: str  # where the clips came from
    device: str  # where batches are normalized
    cases: list[DataCase] = field(default_factory=list)


def bench_data(cfg: Config, formats: tuple[str, ...] = FORMATS, modes: tuple[str, ...] = MODES,
               min_time: float = 2.0, baseline: bool = True, device: str = "cpu",
               progress: ProgressFn = no_progress, frame_sizes: tuple[tuple[int, int], ...] = ((340, 256),)
               ) -> DataBench:
    """Measure each (format, mode) on the config's lists, or on generated clips of ``frame_sizes`` (width,
    height; one clip per size, or two of one size) when it has none.

    ``device`` is where the batch normalization runs (``cuda``: as in GPU training and testing)."""
    dev = resolve_device(device)
    with bench_clips(cfg, formats, modes, frame_sizes) as (source, todo, lists):
        result = DataBench(source, str(dev))
        for done, (fmt, mode) in enumerate(todo, start=1):
            progress("bench data", done - 1, len(todo), f"{fmt} {mode}")
            settings = clip_settings(cfg, mode, fmt)
            result.cases.append(_bench_case(lists[fmt, mode], settings, mode, cfg, min_time, baseline, dev))
        progress("bench data", len(todo), len(todo), "")
        return result


@contextlib.contextmanager
def bench_clips(cfg: Config, formats: tuple[str, ...], modes: tuple[str, ...],
                frame_sizes: tuple[tuple[int, int], ...] = ((340, 256),)
                ) -> Iterator[tuple[str, list[tuple[str, str]], dict[tuple[str, str], list[Sample]]]]:
    """The clips to measure: where they come from, the (format, mode) cases to run, and each case's samples:
    the config's lists, or clips generated in a temporary folder for the duration. Meanwhile OpenCV and torch
    run on one thread, so the numbers are per core."""
    for name, given, valid in (("format", formats, FORMATS), ("mode", modes, MODES)):
        bad = [x for x in given if x not in valid]
        if bad:
            raise UserError(f"unknown {name} {bad[0]!r}; choose from {', '.join(valid)}")
    cv2.setNumThreads(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="tsnctl-bench-") as tmp:
            lists = _config_lists(cfg)
            source = f"lists of {cfg.data.format} from the config"
            if lists is None:
                lists = _synthetic_lists(Path(tmp), formats, frame_sizes)
                sizes = ",".join(f"{w}x{h}" for w, h in frame_sizes)
                source = f"generated {sizes} clips, 250 frames (10 s at 25 fps): JPEG q95 folders and x264 mp4s"
            todo = [(fmt, mode) for fmt in formats for mode in modes if (fmt, mode) in lists]
            if not todo:
                raise UserError(f"nothing to measure: the config's lists hold {cfg.data.format} clips for "
                                f"{', '.join(sorted({m for _, m in lists}))}; asked for {', '.join(formats)} "
                                f"x {', '.join(modes)}")
            yield source, todo, lists
    finally:
        torch.set_num_threads(threads)


def _config_lists(cfg: Config) -> dict[tuple[str, str], list[Sample]] | None:
    files = {"train": cfg.data.train_list, "valid": cfg.data.val_list, "test": cfg.data.test_list}
    if not any(files.values()):
        return None
    return {(cfg.data.format, mode): read_list(path, cfg.data.format, cfg.data.root)[:16]
            for mode, path in files.items() if path}


def _synthetic_lists(root: Path, formats: tuple[str, ...], frame_sizes: tuple[tuple[int, int], ...] = ((340, 256),)
                     ) -> dict[tuple[str, str], list[Sample]]:
    samples: dict[str, list[Sample]] = {"frames": [], "video": []}
    for i in range(max(2, len(frame_sizes))):
        width, height = frame_sizes[i % len(frame_sizes)]
        frames = synthetic.render_frames(250, height=height, width=width, seed=i)
        if "frames" in formats:
            folder = synthetic.write_frame_folder(root / f"clip{i}", frames)
            samples["frames"].append(Sample(folder.name, folder, 0, len(frames)))
        if "video" in formats:
            path = root / f"clip{i}.mp4"
            synthetic.write_h264(path, frames)
            samples["video"].append(Sample(path.name, path, 0))
    return {(fmt, mode): samples[fmt] for fmt in formats for mode in MODES}


def views_label(s: ClipSettings) -> str:
    """The views of a clip for the tables: ``3``, or ``25 x 10 = 250`` when frames give several crops."""
    return f"{s.num_seg} x {s.views // s.num_seg} = {s.views}" if s.views > s.num_seg else str(s.num_seg)


def batch_size_of(cfg: Config, mode: str) -> int:
    return {"train": cfg.train.batch_size, "valid": cfg.valid.batch_size, "test": cfg.test.batch_size}[mode]


def _bench_case(samples: list[Sample], s: ClipSettings, mode: str, cfg: Config, min_time: float,
                baseline: bool, dev: torch.device) -> DataCase:
    """Alternate a tsnctl batch and the baseline's same clips until each side has run ``min_time`` seconds."""
    dataset = ClipDataset(samples, s)
    batch_size = max(1, min(batch_size_of(cfg, mode), 8))
    clips = dataset.load_batch([(0, i % len(samples)) for i in range(batch_size)])[0]
    normalize_ms, float_collate_ms = _batch_costs(clips)
    if dev.type == "cuda":
        normalize_ms = _cuda_normalize_ms(clips, dev)
    views = views_label(s)
    note = ""
    run_baseline = baseline
    if baseline and not peers.available("reference"):
        note, run_baseline = peers.MISSING, False
    if run_baseline and s.fmt == "video" and not _has_decord():
        note, run_baseline = "decord not installed (pip install 'tsnctl[bench]'): no baseline", False
    if run_baseline and s.mode == "test" and s.crop == "three":
        note, run_baseline = "the reference has no ThreeCrop: no baseline", False
    ours = theirs = 0.0
    count = 0
    while count < 3 or ours < min_time or (run_baseline and theirs < min_time):
        keys = [(count + j, (count + j) % len(samples)) for j in range(batch_size)]
        started = time.process_time()
        batch = dataset.load_batch(keys, shared=True)  # as in a worker: the batch buffer in shared memory
        ours += time.process_time() - started
        received(*batch)  # as the main process on its arrival: frees the buffers of batches dropped since
        del batch
        for epoch, index in keys if run_baseline else []:
            random.seed(epoch)
            started = time.process_time()
            _baseline_clip(samples[index], s, epoch)
            theirs += time.process_time() - started
        count += batch_size
    loader_ms = 1000 * ours / count
    stages = {**_stages(samples, s), "normalize": normalize_ms}
    overhead_ms = loader_ms - sum(stages[k] for k in ("read", "decode", "transform"))
    case = DataCase(s.fmt, mode, views, stages, loader_ms, overhead_ms, normalize_ms, None, note)
    if run_baseline:
        case.baseline_ms = 1000 * theirs / count + float_collate_ms
        case.speedup = case.baseline_ms / (loader_ms + normalize_ms)
        case.speedup_loader = case.baseline_ms / loader_ms
    return case


def _baseline_clip(sample: Sample, s: ClipSettings, count: int) -> np.ndarray:
    reference = peers.load("reference")
    rng = np.random.default_rng(count)

    index_fn = frame_indices(s.mode, s.num_seg, rng)

    if s.fmt == "frames":
        return reference.frames_clip(sample.path, index_fn(sample.num_frames), s.mode, s.crop, s.short_side,
                                     s.crop_size, s.image_template)
    return reference.video_clip(sample.path, index_fn, s.mode, s.crop, s.short_side, s.crop_size)


def _batch_costs(clips: torch.Tensor | FrameViews, repeats: int = 3) -> tuple[float, float]:
    """ms per sample of turning a loader batch into model input (tsnctl: cutting TenCrop/ThreeCrop views
    from frames, and normalizing), and of stacking the same views as float32 clips (what the reference's
    workers hand over)."""
    views = clips.views() if isinstance(clips, FrameViews) else clips
    float_clips = [c.to(torch.float32) for c in views]
    cpu = torch.device("cpu")
    times = []
    for fn in (lambda: model_input(clips, cpu), lambda: torch.stack(float_clips)):
        fn()  # the steady state of a loop over batches: model input recycles its float buffer
        started = time.process_time()
        for _ in range(repeats):
            fn()
        times.append(1000 * (time.process_time() - started) / (repeats * len(clips)))
    return times[0], times[1]


def _cuda_normalize_ms(clips: torch.Tensor | FrameViews, dev: torch.device, repeats: int = 10) -> float:
    """Wall ms per sample of copying a pinned uint8 batch to the GPU and making the model input there."""
    batch = clips.pin_memory()
    model_input(batch, dev)
    torch.cuda.synchronize(dev)
    started = time.perf_counter()
    for _ in range(repeats):
        model_input(batch, dev)
    torch.cuda.synchronize(dev)
    return 1000 * (time.perf_counter() - started) / (repeats * len(clips))


def _stages(samples: list[Sample], s: ClipSettings, repeats: int = 3) -> dict[str, float]:
    """ms per sample of reading, decoding and transforming the clips, each stage timed on its own and
    averaged over the same clips as the loader (their frame sizes set the cost of every stage)."""
    rng = np.random.default_rng(0)

    index_fn = frame_indices(s.mode, s.num_seg, rng)

    times = {"read": 0.0, "decode": 0.0, "transform": 0.0}
    for sample in [sample for _ in range(repeats) for sample in samples]:
        if s.fmt == "frames":
            indices = index_fn(sample.num_frames)
            started = time.process_time()
            data = [(sample.path / s.image_template.format(i + 1)).read_bytes() for i in indices]
            times["read"] += time.process_time() - started
            started = time.process_time()
            frames = _decode_clip(data, s.dct_short_side)
        else:
            started = time.process_time()
            frames = video.read_video(sample.path, index_fn)  # demuxing (reading) included
        times["decode"] += time.process_time() - started
        started = time.process_time()
        if s.mode == "train":
            train_preset(frames, s.short_side, s.crop_size, rng, scales=s.crop_scales)
        elif s.crop == "center":
            eval_preset(frames, s.short_side, s.crop_size, s.crop)
        else:  # ThreeCrop/TenCrop views are cut at the model (``views.FrameViews``): workers only scale
            scale(frames, s.short_side).copy()
        times["transform"] += time.process_time() - started
    return {k: 1000 * v / (repeats * len(samples)) for k, v in times.items()}


def _decode_clip(blobs: list[bytes], dct_short_side: int) -> np.ndarray:
    """What ``decode.read_frame_folder`` does after reading: the frames decoded into one clip array."""
    first = decode_jpeg(blobs[0], dct_short_side)
    clip = np.empty((len(blobs), *first.shape), np.uint8)
    clip[0] = first
    for data, slot in zip(blobs[1:], clip[1:], strict=True):
        decode_jpeg(data, dct_short_side, slot)
    return clip


def _has_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True
