"""What an exact resume needs beyond the weights: the data order, the RNG streams, the position.

The training order of epoch ``e`` is a permutation fixed by ``(seed, e)`` (``loaders.EpochSampler``) and
each clip's random crops come from ``sample_rng(seed, e, index)``, so a run resumed after step ``s`` of
epoch ``e`` skips the first ``s`` batches of the same permutation and sees exactly the clips and crops
the uninterrupted run would have seen. The global RNGs (dropout, CUDA) are saved and restored as well.
"""

from __future__ import annotations

import csv
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsnctl.errors import UserError

log = logging.getLogger("tsnctl")


def rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def newest_checkpoint(folder: Path) -> Path:
    """The most recently written ``*.pt`` of a run folder (``last.pt`` wins a tie)."""
    candidates = [p for p in folder.glob("*.pt") if p.is_file()]
    if not candidates:
        raise UserError(f"{folder}: no checkpoint (*.pt) to resume from; train without --resume first")
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.pt"))


def trim_metrics(path: Path, epochs_done: int) -> None:
    """Drop metrics.csv rows of epochs after ``epochs_done``: a resumed run writes them again."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= epochs_done]
    if len(kept) != len(rows):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(kept)


def trim_steps(path: Path, epochs_done: int, step: int) -> None:
    """Drop steps.csv rows after the resumed position (epoch ``epochs_done + 1``, micro-batch ``step``): the
    resumed run logs those steps again, and two rows for one (epoch, step) would draw a zig-zag curve."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return

    def kept(row: list[str]) -> bool:
        epoch, at = int(row[0]), int(row[1])
        return epoch <= epochs_done or (epoch == epochs_done + 1 and at <= step)

    rows = [rows[0]] + [row for row in rows[1:] if len(row) >= 2 and kept(row)]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    os.replace(tmp, path)
