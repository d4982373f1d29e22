"""tsnctl checkpoints: one ``torch.save`` dict holding everything needed to resume, test or deploy.

Keys: ``model`` (state dict), ``optimizer``, ``scheduler``, ``epoch`` (epochs completed), ``config``
(the resolved config as a plain dict), ``class_names``, ``best_top1``. Only plain types and tensors are
stored, so loading uses ``torch.load(weights_only=True)`` and never runs code from the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tsnctl.errors import UserError

FORMAT = "tsnctl-checkpoint-1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write atomically: a temporary file, flushed to disk, then renamed over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a tsnctl checkpoint; anything else gets a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or foreign files all end here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"{path}: not a readable tsnctl checkpoint ({reason[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a tsnctl checkpoint (no '{FORMAT}' marker)")
    return state
