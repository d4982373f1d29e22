"""Pooled features before the fc (``tsnctl features``): one vector per clip or per segment, resumable, shardable.

Each clip's views are made with the model's test protocol (as ``test`` and ``predict`` make them) and pushed
through the backbone: ``[V, D]`` pooled features. ``level="video"`` keeps their mean over all views, which is
exactly what the TSN head feeds its fc (``head.fc(feature)`` = the clip's logits); ``level="segment"`` keeps
one vector per segment (the mean over that segment's crops) with the segment's frame index and time.

Output: ``OUT.npy`` (float32 ``[rows, D]``) and ``OUT.csv`` beside it (``row,clip,segment,frame,time``: which
clip and segment each row is; segment -1 and empty frame/time for video level; time = frame / the video's
frame rate, empty for frame folders). Each clip's result is first written into ``OUT.npy.part/`` (one file per
clip, renamed into place), so a killed run continues where it stopped; both outputs are written only when every
clip is done (sidecar first, the ``.npy`` last, each to a temporary name and renamed), then the ``.part`` folder
goes. ``OUT.parquet`` instead is one table holding both (columns ``row, clip, segment, frame, time`` as the
sidecar, frame and time null where it is empty, and ``feature``: fixed-size lists of float32), written the same
way (pyarrow, the ``parquet`` extra, imported only then). ``shard=(I, N)`` takes the clips whose name hashes
to shard I (as ``extract-frames --shard``); give each shard its own OUT.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from tsnctl.data.dataset import ClipSettings, load_clip
from tsnctl.data.presets import VIEWS_PER_FRAME
from tsnctl.data.sampling import eval_indices
from tsnctl.data.transforms import normalize
from tsnctl.data.video import count_frames, stream_info
from tsnctl.deploy.predict import clip_sample
from tsnctl.errors import UserError
from tsnctl.models.tsm import set_num_segments
from tsnctl.prepare.folders import acquire, release, remove
from tsnctl.prepare.shards import in_shard
from tsnctl.progress import ProgressFn, no_progress
from tsnctl.textfiles import write_atomic

LEVELS = ("video", "segment")
COLUMNS = ["row", "clip", "segment", "frame", "time"]


@dataclass
class FeatureSummary:
    out: Path  # the .npy or .parquet
    index: Path | None  # the .npy's .csv sidecar; None for .parquet (the table holds the index)
    rows: int = 0
    dim: int = 0
    clips: int = 0  # clips in this shard
    resumed: int = 0  # clips whose features a previous run had already written
    failed: list[tuple[str, str]] = field(default_factory=list)  # (clip, reason)


def check_output(out: str | Path) -> Path:
    """OUT must end in .npy or .parquet (then pyarrow, an optional extra, must import: checked before any
    work starts) and not be a folder."""
    out = Path(out)
    if out.suffix not in (".npy", ".parquet"):
        raise UserError(f"{out}: the features file must end in .npy or .parquet")
    if out.suffix == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise UserError(f"{out}: Parquet output needs pyarrow: pip install 'tsnctl[parquet]', or write .npy "
                            "(with its .csv sidecar)") from None
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out names the .npy or .parquet file to write")
    return out


def extract_features(model: torch.nn.Module, settings: ClipSettings, clips: list[str], out: str | Path,
                     level: str = "video", shard: tuple[int, int] | None = None,
                     device: torch.device | None = None, progress: ProgressFn = no_progress) -> FeatureSummary:
    """Write the features of ``clips`` (of ``shard``) to ``out`` and its sidecar; see the module doc.
    Clips that cannot be read are listed in ``failed`` and nothing final is written (their neighbours are
    kept in the ``.part`` folder for the next run)."""
    if level not in LEVELS:
        raise UserError(f"--level {level!r}: choose one of {', '.join(LEVELS)}")
    out = check_output(out)
    mine = [clip for clip in clips if in_shard(clip, shard)]
    summary = FeatureSummary(out, out.with_suffix(".csv") if out.suffix == ".npy" else None, clips=len(mine))
    part = out.with_name(out.name + ".part")
    if part.is_symlink() or (part.exists() and not part.is_dir()):
        raise UserError(f"{part}: in the way of the partial results folder; remove it")
    part.mkdir(parents=True, exist_ok=True)
    lock = acquire(part / "lock", wait=False)
    if lock is None:
        raise UserError(f"{out}: another tsnctl features run is writing it", exit_code=1)
    try:
        _check_settings(part, {"level": level, "settings": repr(settings), "shard": list(shard or ())})
        device = device or torch.device("cpu")
        model = model.eval().to(device)
        set_num_segments(model, settings.num_seg)
        for done, clip in enumerate(mine, start=1):
            path = part / (hashlib.sha1(clip.encode("utf-8")).hexdigest() + ".npz")
            if path.exists():
                summary.resumed += 1
            else:
                try:
                    features, rows = clip_features(model, settings, clip, level, device)
                except UserError as exc:
                    summary.failed.append((clip, str(exc)))
                    progress("features", done, len(mine), f"{len(summary.failed)} unreadable")
                    continue
                _save_npz(path, features, rows)
            progress("features", done, len(mine), f"{len(summary.failed)} unreadable" if summary.failed else "")
        if not summary.failed:
            _finish(summary, mine, part)
    finally:
        release(lock)
    if not summary.failed or not any(part.glob("*.npz")):  # done, or nothing worth resuming
        remove(part)
    return summary


def clip_features(model: torch.nn.Module, settings: ClipSettings, clip: str, level: str,
                  device: torch.device) -> tuple[np.ndarray, list[dict]]:
    """Float32 ``[rows, D]`` and one ``{"segment", "frame", "time"}`` per row for one clip (module doc)."""
    sample, fmt = clip_sample(clip, settings.image_template)
    s = replace(settings, fmt=fmt)
    views = load_clip(sample, s, np.random.default_rng(0))  # [V, 3, c, c], V = crops x segments, crop-major
    with torch.no_grad():
        features = model.forward_features(normalize(views[None].to(device)))[0].float().cpu()  # [V, D]
    if level == "video":
        return features.mean(dim=0, keepdim=True).numpy(), [{"segment": -1, "frame": "", "time": ""}]
    crops = VIEWS_PER_FRAME[s.crop]
    per_segment = features.view(crops, s.num_seg, -1).mean(dim=0).numpy()
    if fmt == "video":
        num_frames, (fps, _) = count_frames(sample.path), stream_info(sample.path)
    else:
        num_frames, fps = sample.num_frames, 0.0
    frames = eval_indices(num_frames, s.num_seg)
    rows = [{"segment": k, "frame": f, "time": f"{f / fps:.3f}" if fps else ""} for k, f in enumerate(frames)]
    return per_segment, rows


def _check_settings(part: Path, settings: dict) -> None:
    """A ``.part`` folder continues only the run it was started by (same level, protocol and shard)."""
    path = part / "settings.json"
    if path.exists():
        if json.loads(path.read_text()) != settings:
            raise UserError(f"{part}: holds the partial results of a run with other options ({path}); run with "
                            "the same options, or remove the folder to start again")
        return
    write_atomic(path, json.dumps(settings))


def _save_npz(path: Path, features: np.ndarray, rows: list[dict]) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    try:
        np.savez(tmp, features=features.astype(np.float32), rows=np.array(json.dumps(rows)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _finish(summary: FeatureSummary, clips: list[str], part: Path) -> None:
    """Join the clips' files in list order: for .npy the sidecar, then the ``.npy``; or the one ``.parquet``
    (each written to a temporary name and renamed)."""
    blocks, rows = [], []
    for clip in clips:
        with np.load(part / (hashlib.sha1(clip.encode("utf-8")).hexdigest() + ".npz")) as data:
            blocks.append(data["features"])
            rows += [(clip, row) for row in json.loads(str(data["rows"]))]
    features = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
    summary.rows, summary.dim = features.shape
    if summary.index is None:
        _write_parquet(summary.out, features, rows)
        return
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for i, (clip, row) in enumerate(rows):
        writer.writerow([i, clip, row["segment"], row["frame"], row["time"]])
    write_atomic(summary.index, buf.getvalue())
    tmp = summary.out.with_name(summary.out.stem + ".tmp.npy")
    try:
        np.save(tmp, features)
        os.replace(tmp, summary.out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_parquet(out: Path, features: np.ndarray, rows: list[tuple[str, dict]]) -> None:
    """One table: the sidecar's columns (empty frame/time -> null) and ``feature`` as fixed-size float32 lists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = features.shape[1]
    feature = (pa.FixedSizeListArray.from_arrays(pa.array(features.ravel(), pa.float32()), dim) if dim
               else pa.array([], pa.list_(pa.float32(), 0)))  # no clips in this shard: zero rows, as the .npy
    table = pa.table({
        "row": pa.array(range(len(rows)), pa.int64()),
        "clip": pa.array([clip for clip, _ in rows], pa.string()),
        "segment": pa.array([row["segment"] for _, row in rows], pa.int64()),
        "frame": pa.array([None if row["frame"] == "" else row["frame"] for _, row in rows], pa.int64()),
        "time": pa.array([None if row["time"] == "" else float(row["time"]) for _, row in rows], pa.float64()),
        "feature": feature,
    })
    tmp = out.with_name(out.name + ".tmp")  # not *.parquet: a killed write leaves nothing finished-looking
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
