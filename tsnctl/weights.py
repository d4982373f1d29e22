"""Load a model for inference (test, export, predict) from a weights file.

A tsnctl checkpoint carries its config and class names, so it needs nothing else; its model section
wins over the one in a ``-c`` config, because it describes the weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tsnctl.config import Config, config_from_dict
from tsnctl.engine.checkpoint import load_checkpoint
from tsnctl.errors import UserError
from tsnctl.models.tsn import TSN, build_model

log = logging.getLogger("tsnctl")


@dataclass
class LoadedModel:
    model: TSN  # in eval mode, on the CPU
    cfg: Config  # data and test settings from -c when given, else from the checkpoint
    class_names: list[str]


def load_for_inference(weights: str | Path, cfg: Config | None = None) -> LoadedModel:
    """Build the model stored in ``weights`` and fill every parameter; refuse partial matches."""
    state = load_checkpoint(weights)
    stored = config_from_dict(state["config"], source=f"{weights} (stored config)")
    if cfg is None:
        cfg = stored
    elif cfg.model != stored.model:
        log.warning("%s: using the checkpoint's model settings (%s, %d classes), not the config's",
                    weights, stored.model.backbone, stored.model.num_classes)
        cfg.model = stored.model
    # The backbone comes from the checkpoint itself: never reload pretrained weights here.
    cfg.model.pretrained = ""
    model = build_model(cfg.model)  # with the checkpoint's temporal shift settings, if any
    try:
        result = model.load_state_dict(state["model"], strict=False)
    except RuntimeError as exc:  # shape mismatches
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise UserError(f"{weights}: {lines[0] if lines else 'weights do not fit the model'}") from None
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{weights}: weights do not fit the model (missing: "
                        f"{', '.join(result.missing_keys[:5]) or 'none'}; unexpected: "
                        f"{', '.join(result.unexpected_keys[:5]) or 'none'})")
    names = list(state.get("class_names") or [f"class_{i}" for i in range(cfg.model.num_classes)])
    return LoadedModel(model.eval(), cfg, names)
