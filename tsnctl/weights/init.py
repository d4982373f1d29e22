"""A new TSN (or TSM) for training, its weights from ImageNet, a weights file of any format, or random.

Here, not in ``models/``: the network definition knows nothing of files or formats; filling it from them is
the weights layer's job (``weights/formats.py`` reads the files).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tsnctl.config import ModelConfig
from tsnctl.errors import UserError
from tsnctl.models.tsn import TSN
from tsnctl.progress import ProgressFn, no_progress
from tsnctl.weights import hub
from tsnctl.weights.formats import Weights, from_state_dict, load_into, read_weights

log = logging.getLogger("tsnctl")


def build_model(cfg: ModelConfig, class_names: list[str] | None = None) -> TSN:
    """The TSN (or TSM) of a model config, initialised from ``cfg.init_from`` or else ``cfg.pretrained`` when set.

    ``class_names``: the run's classes; an ``init_from`` checkpoint that names other classes (same count)
    keeps its backbone only."""
    check_published(cfg)
    model = TSN(cfg.backbone, cfg.num_classes, cfg.dropout, cfg.fc_std, cfg.temporal_shift, cfg.shift_div,
                cfg.shift_place, cfg.shift_segments, cfg.bn_running_var, cfg.zero_init_last)
    if cfg.init_from:
        init_from_weights(model, cfg.init_from, cfg.backbone, class_names)
    elif cfg.pretrained:
        load_backbone_weights(model, cfg.pretrained, cfg.backbone)
    return model


def check_published(cfg: ModelConfig) -> None:
    """A published name must fit the configured network (checked before any download): a TSM checkpoint loads
    into a plain TSN without complaint (same tensors), but the model would then be a different network."""
    name = cfg.init_from or cfg.pretrained
    if not hub.is_published_name(name):
        return
    entry = hub.PUBLISHED[name]
    if (entry.backbone, entry.temporal_shift) != (cfg.backbone, cfg.temporal_shift):
        raise UserError(f"{name} is a {'TSM' if entry.temporal_shift else 'TSN'} {entry.backbone}: set "
                        f"model.backbone={entry.backbone} and model.temporal_shift={str(entry.temporal_shift).lower()}"
                        f" (the config has {cfg.backbone}, temporal_shift={str(cfg.temporal_shift).lower()})")


def fetch_init_weights(cfg: ModelConfig, progress: ProgressFn = no_progress) -> None:
    """Download ``cfg.init_from`` when it is a published name not yet cached (checked against the config
    first), so that the processes of a multi-GPU run find it in the cache."""
    check_published(cfg)
    hub.resolve(cfg.init_from, progress)


def load_backbone_weights(model: TSN, source: str, backbone: str) -> None:
    """Fill every backbone parameter from ``imagenet`` or a weights file of any supported format.

    A classifier head in the file (e.g. ImageNet's 1000 classes) is not used.
    """
    if source == "imagenet":
        weights = from_state_dict(_imagenet_state_dict(backbone), f"ImageNet weights for {backbone}")
    else:
        weights = read_weights(hub.resolve(source))
    _load_backbone(model, weights, source, backbone)


def init_from_weights(model: TSN, source: str, backbone: str, class_names: list[str] | None = None) -> None:
    """Start training from another model (a file, or a published name of ``weights/hub.py``): its whole
    backbone, and its head when the class counts match (and the class names, when both sides have them)."""
    weights = read_weights(hub.resolve(source))
    _load_backbone(model, weights, source, backbone)
    stored, wanted = weights.num_classes, model.head.fc.out_features
    if stored is None:
        log.info("%s: %s without a classifier head; the head starts from its random init", source, weights.fmt)
    elif stored != wanted:
        log.info("%s: the head has %d classes, the model %d: re-initialising the head only", source, stored, wanted)
    elif weights.class_names and class_names and weights.class_names != class_names:
        log.info("%s: the head was trained on other classes (%s, ...): re-initialising the head only", source,
                 ", ".join(weights.class_names[:3]))
    else:
        head = {k.removeprefix("head."): v for k, v in weights.tensors.items() if k.startswith("head.")}
        load_into(model.head, head, source, "the TSN head", {k.removeprefix("head."): weights.name(k) for k in head})
        log.info("%s: initialised backbone and head from a %s", source, weights.fmt)


def _load_backbone(model: TSN, weights: Weights, source: str, backbone: str) -> None:
    tensors = weights.backbone()
    names = {k: weights.name(f"backbone.{k}") for k in tensors}
    load_into(model.backbone, tensors, source, backbone, names, weights.unknown)


def _imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    # Imported here: torchvision costs ~1.5 s of start-up (it pulls in torch._dynamo), and only this
    # download needs it. resnet50 -> torchvision.models.ResNet50_Weights.IMAGENET1K_V1.
    import torchvision

    weights = getattr(torchvision.models, f"ResNet{backbone.removeprefix('resnet')}_Weights").IMAGENET1K_V1
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False)
    except Exception:  # noqa: BLE001 - no network, blocked proxy, partial file: all end the same way
        raise UserError(f"cannot download ImageNet weights for {backbone}: fetch {weights.url} and put it "
                        f"at {cache} (or set model.pretrained to the file's path)", exit_code=1) from None
