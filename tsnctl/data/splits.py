"""The one place a config becomes how a split's clips are read: train, valid (centre crop) or test settings."""

from __future__ import annotations

from tsnctl.config import Config
from tsnctl.data.dataset import ClipSettings

SPLITS = ("train", "valid", "test")


def clip_settings(cfg: Config, split: str, fmt: str | None = None) -> ClipSettings:
    """The settings of the ``train``, ``valid`` or ``test`` clips of ``cfg``, in ``fmt`` (default: the config's).

    Train clips take random segments and crops (seeded by ``train.seed``); valid clips one centre crop per
    segment; test clips ``test.crop`` views per segment.
    """
    fmt = fmt or cfg.data.format
    common = {"image_template": cfg.data.image_template, "jpeg_dct_scale": cfg.data.jpeg_dct_scale}
    match split:
        case "train":
            return ClipSettings(fmt, cfg.train.num_seg, cfg.data.short_side, cfg.data.crop_size, mode="train",
                                seed=cfg.train.seed, crop_scales=tuple(cfg.data.crop_scales), **common)
        case "valid":
            return ClipSettings(fmt, cfg.valid.num_seg, cfg.data.short_side, cfg.data.crop_size, crop="center",
                                **common)
        case "test":
            return ClipSettings(fmt, cfg.test.num_seg, cfg.data.short_side, cfg.data.crop_size, crop=cfg.test.crop,
                                **common)
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
