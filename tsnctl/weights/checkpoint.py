"""tsnctl checkpoints: one ``torch.save`` dict holding everything needed to resume, test or deploy.

Keys: ``model`` (state dict), ``optimizer``, ``scheduler``, ``epoch`` (epochs completed), ``config``
(the resolved config as a plain dict), ``class_names``, ``best_top1``. Only plain types and tensors are
stored, so loading uses ``torch.load(weights_only=True)`` and never runs code from the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from tsnctl.errors import UserError

FORMAT = "tsnctl-checkpoint-1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write atomically: a temporary file, flushed to disk, then renamed over ``path``.

    On any failure (disk full, read-only folder, Ctrl-C) the temporary file is removed, so a failed save
    leaves the previous checkpoint and no half-written ``.tmp`` next to it.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            writer = _RecordingWriter(f)
            try:
                torch.save({"format": FORMAT, **state}, writer)
            except RuntimeError as exc:  # torch's zip writer turns a failed write() into its own error
                raise writer.error or exc from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
            raise UserError(f"{path}: cannot write checkpoint ({reason})", exit_code=1) from None
        raise


class _RecordingWriter:
    """A file wrapper that keeps the OSError of a failed write, which torch.save would report only as
    'unexpected pos'."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a tsnctl checkpoint; anything else gets a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated, foreign or code-carrying files all end here
        if "Weights only load failed" in str(exc):
            raise UserError(f"{path}: refused to load: {refusal_reason(exc)}") from None
        raise UserError(f"{path}: not a readable tsnctl checkpoint ({_first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a tsnctl checkpoint (no '{FORMAT}' marker)")
    return state


def refusal_reason(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in our words instead of torch's advice to load
    it with ``weights_only=False`` (which would run code from the file)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if found:
        return (f"it holds a Python object of type {found.group(1)}, which could run code when loaded (a tsnctl "
                "checkpoint holds only tensors and plain values)")
    return f"it holds data beyond tensors and plain values ({_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__
