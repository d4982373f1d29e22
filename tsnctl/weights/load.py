"""Load a whole model for inference (test, export, predict) from a weights file, and convert it.

Accepted formats (read by ``tsnctl.weights.formats``, detected from the file itself): tsnctl checkpoints,
reference ``.pdparams``, MMAction2 1.x TSN checkpoints and torchvision ResNet state dicts with an ``fc``.
A tsnctl checkpoint carries its config and class names; its model section wins over a ``-c`` config,
because it describes the weights. The other formats carry no config: the ``-c`` config (or the defaults:
ResNet-50, 400 classes) says which network they fill, and every tensor must fit it exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tsnctl.config import Config, apply_overrides, config_from_dict
from tsnctl.data.lists import read_labels
from tsnctl.errors import UserError
from tsnctl.models.tsn import TSN
from tsnctl.weights.checkpoint import save_checkpoint
from tsnctl.weights.formats import Weights, load_into, read_weights
from tsnctl.weights.init import build_model

log = logging.getLogger("tsnctl")

KINETICS400_LABELS = Path(__file__).resolve().parents[1] / "labels" / "kinetics400.txt"


@dataclass
class LoadedModel:
    model: TSN  # in eval mode, on the CPU
    cfg: Config  # data and test settings from -c when given, else from the checkpoint
    class_names: list[str]
    fmt: str = "tsnctl checkpoint"  # the format the weights were read from
    class_names_from: str = "the checkpoint"  # a file name, "the checkpoint", "Kinetics-400" or "numbers"


def load_for_inference(weights: str | Path, cfg: Config | None = None, labels: str | Path | None = None,
                       overrides: list[str] | None = None) -> LoadedModel:
    """Build the model stored in ``weights`` and fill every parameter; refuse partial matches.

    Config: ``cfg`` when given, else the checkpoint's, else the defaults; ``overrides`` (``section.key=value``)
    apply on top before the model is built, so ``model.num_classes=101`` fits a 101-class ``.pdparams``.
    Class names: ``labels`` when given, else the checkpoint's, else ``data.label_file``, else the
    Kinetics-400 names for a 400-class model, else ``class_0 ...``.
    """
    imported = read_weights(weights)
    if imported.config is not None:
        stored = config_from_dict(imported.config, source=f"{weights} (stored config)")
        if cfg is None:
            cfg = stored
        elif cfg.model != stored.model:
            log.warning("%s: using the checkpoint's model settings (%s, %d classes), not the config's",
                        weights, stored.model.backbone, stored.model.num_classes)
            cfg.model = stored.model
    else:
        cfg = cfg or Config()
    apply_overrides(cfg, overrides or [])
    if imported.config is None:
        _check_full_model(imported, cfg, weights)
    # The weights come from the file itself: never reload pretrained or init_from weights here.
    cfg.model.pretrained = cfg.model.init_from = ""
    model = build_model(cfg.model)  # with the stored temporal shift settings, if any; loads nothing
    load_into(model, imported.tensors, str(weights), f"a {cfg.model.backbone} TSN with {cfg.model.num_classes} "
              "classes", imported.origin, imported.unknown)
    names, names_from = _class_names(cfg, imported.class_names, labels)
    return LoadedModel(model.eval(), cfg, names, imported.fmt, names_from)


def _check_full_model(imported: Weights, cfg: Config, source: str | Path) -> None:
    stored = imported.num_classes
    if stored is None:
        raise UserError(f"{source}: a {imported.fmt} without a classifier head (backbone weights): use it for "
                        "training with 'train --init-from' or model.pretrained, not for inference")
    if stored != cfg.model.num_classes:
        raise UserError(f"{source}: the head has {stored} classes but model.num_classes is "
                        f"{cfg.model.num_classes} (pass -o model.num_classes={stored} or a matching -c config)")


def _class_names(cfg: Config, stored: list[str] | None, labels: str | Path | None) -> tuple[list[str], str]:
    count = cfg.model.num_classes
    if labels:
        source, names = str(labels), read_labels(labels)
    elif stored:
        source, names = "the checkpoint", stored
    elif cfg.data.label_file:
        source, names = cfg.data.label_file, read_labels(cfg.data.label_file)
    elif count == 400:
        source, names = "Kinetics-400", read_labels(KINETICS400_LABELS)
    else:
        return [f"class_{i}" for i in range(count)], "numbers"
    if len(names) != count:
        raise UserError(f"{source}: {len(names)} class names for a model with {count} classes")
    return names, source


@dataclass
class ConvertReport:
    output: Path
    fmt: str  # the source format
    num_classes: int
    class_names_from: str  # a file name, "the checkpoint", "Kinetics-400" or "numbers" (class_0 ...)


def convert_weights(source: str | Path, output: str | Path, cfg: Config | None = None,
                    labels: str | Path | None = None, overrides: list[str] | None = None) -> ConvertReport:
    """Write ``source`` (any full-model format) as a tsnctl checkpoint with its config and class names."""
    loaded = load_for_inference(source, cfg, labels, overrides)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(output, {"model": loaded.model.state_dict(), "config": loaded.cfg.to_dict(),
                             "class_names": loaded.class_names, "epoch": 0, "converted_from": str(source),
                             "source_format": loaded.fmt})
    return ConvertReport(output, loaded.fmt, loaded.cfg.model.num_classes, loaded.class_names_from)
