"""Typed configuration: one dataclass per concern, loaded from YAML, overridden with ``-o key=value``.

Defaults are the reference recipe (PaddleVideo ``tsn_k400_frames.yaml``, ResNet-50, Kinetics-400).
There is no inheritance and no string registry: a YAML file lists the values it changes, and every key
is checked against the dataclasses so a typo is an error, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tsnctl.errors import UserError
from tsnctl.textfiles import read_utf8, write_atomic


@dataclass
class DataConfig:
    """Where clips come from and how frames are turned into tensors."""

    format: str = "frames"  # "frames": JPEG folders with a frame list; "video": video files with a video list
    root: str = ""  # prefix of the paths in the lists; empty means the folder that holds each list
    train_list: str = ""  # training list: "<frame_dir> <num_frames> <label>" (frames) or "<path> <label>" (video;
    # "<path> <label> <start_s> <end_s>": only that time range of the video, trimmed on the fly)
    val_list: str = ""  # validation list (same format), used by train --validate
    test_list: str = ""  # test list (same format), used by test unless --list is given
    label_file: str = ""  # class names, one per line ("name" or "<id> name"); empty: class_0, class_1, ...
    image_template: str = "img_{:05d}.jpg"  # frame file names, 1-based as in the reference
    short_side: int = 256  # Scale: the short side after resizing (aspect ratio kept)
    crop_size: int = 224  # side of the square crops fed to the network
    crop_scales: list[float] = field(  # train MultiScaleCrop: crop sides per short side (these four: the reference)
        default_factory=lambda: [1.0, 0.875, 0.75, 0.66])
    num_workers: int = -1  # DataLoader worker processes; -1: CPU cores per GPU less one; 0: main process
    decode_device: str = "cpu"  # cpu: loader workers decode and crop; cuda: JPEG decode and crops on the GPU
    jpeg_dct_scale: bool = False  # decode JPEGs >= 2 x short_side at reduced scale (DCT); faster, not reference pixels


@dataclass
class ModelConfig:
    """The TSN network: a ResNet backbone and the consensus head."""

    backbone: str = "resnet50"  # resnet18 | resnet34 | resnet50 | resnet101 | resnet152
    num_classes: int = 400  # size of the fc output; must match the label file's class count
    dropout: float = 0.4  # applied to the averaged feature, before the fc
    fc_std: float = 0.01  # fc weight init: Normal(0, fc_std), bias 0
    pretrained: str = ""  # backbone init: "" (random), "imagenet", a weights file (tsnctl/weights/) or a published name
    init_from: str = ""  # start from a weights file or published name (docs/finetune.md): backbone, and head when its
    # classes match; wins over pretrained
    temporal_shift: bool = False  # TSM: shift channels between neighbouring segments in every residual block
    shift_div: int = 8  # 1/shift_div of the channels move forward in time, 1/shift_div backward
    shift_place: str = "residual"  # residual: start of each block's residual branch (the paper's choice)
    shift_segments: int = 0  # clip length T the shift runs over; 0: the num_seg of the mode (train/valid/test)
    bn_running_var: str = "unbiased"  # BN running variance update: unbiased (torch) | biased (the reference's Paddle)
    zero_init_last: bool = False  # last BN gamma of each residual block starts at 0 (each block starts as identity)
    freeze_stages: int = -1  # training: conv1/bn1 and layer1..layerN keep their weights and BN statistics; -1: none
    partial_bn: bool = False  # training: every BN but the first keeps its statistics and affine (TSN paper)


@dataclass
class TrainConfig:
    """Optimiser, schedule and sampling for training (SGD, optional warm-up, step decay per epoch)."""

    num_seg: int = 3  # segments sampled per clip
    batch_size: int = 32  # clips per step (per GPU)
    epochs: int = 100  # passes over the training list
    lr: float = 0.01  # the reference uses 0.01 for a global batch of 256 (8 GPUs x 32)
    lr_steps: list[int] = field(default_factory=lambda: [40, 80])  # epochs after which lr *= lr_gamma
    lr_gamma: float = 0.1  # factor applied to lr at each epoch of lr_steps
    lr_schedule: str = "step"  # step: x lr_gamma after each epoch of lr_steps; cosine: per-step cosine decay to 0
    warmup_epochs: int = 0  # linear warm-up from warmup_ratio x lr to lr (step: per epoch; cosine: per step)
    warmup_ratio: float = 0.1  # lr factor of the first warm-up epoch
    fc_lr_mult: float = 1.0  # the classifier's (fc weight and bias) lr = lr x fc_lr_mult
    optimizer: str = "sgd"  # sgd (momentum, the reference) | adamw (betas 0.9/0.999, decoupled weight decay)
    momentum: float = 0.9  # SGD momentum (not Nesterov)
    weight_decay: float = 1e-4  # on all parameters, BN and biases included, as in the reference
    label_smoothing: float = 0.0  # cross-entropy label smoothing of the training loss
    early_stop_patience: int = 0  # with --validate: stop after this many epochs without a better top-1; 0: off
    class_weights: str = "none"  # none | auto: each class weighs N / (C x its clip count) in the training loss
    sampler: str = "shuffle"  # shuffle: each clip once per epoch | balanced: classes drawn equally often
    mixup_alpha: float = 0.0  # mixup: blend clip pairs, lam ~ Beta(alpha, alpha); 0: off
    cutmix_alpha: float = 0.0  # cutmix: paste a box of another clip (same box in every segment); 0: off
    mix_prob: float = 1.0  # share of batches mixed when mixup_alpha or cutmix_alpha is set
    mix_switch_prob: float = 0.5  # with both alphas set: share of mixed batches that use cutmix
    clip_grad_norm: float = 40.0  # global gradient norm limit; 0 disables clipping
    seed: int = 0  # seeds model init, shuffling, segment sampling and crops
    log_interval: int = 20  # steps between log lines
    save_interval: int = 10  # epochs between periodic checkpoints (last.pt is written every epoch)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Scaling out (see docs/distributed.md). batch_size is per process; the global batch is
    # batch_size x processes x accumulate.
    auto_scale_lr: bool = False  # lr x global batch / 256 (the reference's 0.01 belongs to 8 GPUs x 32)
    accumulate: int = 1  # micro-batches per optimizer step (gradient accumulation)
    sync_bn: bool = False  # BatchNorm statistics over all GPUs (SyncBatchNorm; CUDA only)
    amp: str = "none"  # none | bf16 | fp16 (autocast; fp16 only on CUDA, with a GradScaler)
    channels_last: bool = False  # NHWC memory layout for the convolutions (faster with AMP on tensor cores)
    compile: bool = False  # torch.compile the model for training
    checkpoint_steps: int = 1000  # optimizer steps between mid-epoch saves of last.pt (resume restarts there); 0: off
    max_bad_fraction: float = 0.01  # stop when more than this fraction of training clips cannot be read


@dataclass
class ValidConfig:
    """Validation during training: CenterCrop on ``num_seg`` centred segments."""

    num_seg: int = 3  # segments per clip (centred, one CenterCrop each)
    batch_size: int = 32  # clips per forward pass


@dataclass
class TestConfig:
    """The test protocol: ``num_seg`` centred segments times the crops of ``crop``."""

    num_seg: int = 25  # centred segments per video (the reference tests with 25)
    crop: str = "ten"  # ten | three | center
    batch_size: int = 1  # clips per forward pass (each clip is num_seg x crops views)
    max_views_per_batch: int = 0  # views per forward pass; a clip's views run in chunks (same scores); 0: no limit


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    valid: ValidConfig = field(default_factory=ValidConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The one list of backbones (torchvision ResNets; models/tsn.py builds them) and of test crops (with the
# reference's names, as reports print them).
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
TEST_CROPS = {"ten": "TenCrop", "three": "ThreeCrop", "center": "CenterCrop"}

CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("frames", "video"),
    "data.decode_device": ("cpu", "cuda"),
    "model.backbone": BACKBONES,
    "model.shift_place": ("residual",),
    "model.bn_running_var": ("unbiased", "biased"),
    "test.crop": tuple(TEST_CROPS),
    "train.amp": ("none", "bf16", "fp16"),
    "train.lr_schedule": ("step", "cosine"),
    "train.optimizer": ("sgd", "adamw"),
    "train.class_weights": ("none", "auto"),
    "train.sampler": ("shuffle", "balanced"),
}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, then the YAML file at ``path``, then ``section.key=value`` overrides."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        text = read_utf8(path, "config file")
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where, column = (f":{mark.line + 1}", f", column {mark.column + 1}") if mark is not None else ("", "")
            raise UserError(f"{path}{where}: not valid YAML ({_yaml_problem(exc)}{column})") from None
        apply_dict(cfg, raw or {}, source=str(path))
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML) to ``cfg`` in place, then validate it."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r}: expected section.key=value")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            column = f" at column {mark.column + 1} of the value" if mark is not None else ""
            raise UserError(f"override {item!r}: not a valid YAML value ({_yaml_problem(exc)}{column})") from None
        apply_dict(cfg, _nest(key.strip(), parsed), source="-o")
    validate(cfg)
    return cfg


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    return " ".join(str(problem).split())


def config_from_dict(raw: dict[str, Any], source: str = "checkpoint") -> Config:
    """Rebuild a Config stored as a plain dict (for example inside a checkpoint)."""
    cfg = Config()
    apply_dict(cfg, raw, source=source)
    validate(cfg)
    return cfg


def apply_dict(cfg: Config, raw: Any, source: str) -> None:
    """Set every ``{section: {key: value}}`` in ``raw`` on ``cfg``, checking names and types."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    sections = {f.name for f in dataclasses.fields(cfg)}
    for section, values in raw.items():
        if section not in sections:
            raise UserError(f"{source}: unknown section {section!r} (valid: {', '.join(sorted(sections))})")
        target = getattr(cfg, section)
        if not isinstance(values, dict):
            raise UserError(f"{source}: section {section!r} must be a mapping of keys to values")
        hints = typing.get_type_hints(type(target))
        for key, value in values.items():
            if key not in hints:
                valid = ", ".join(f.name for f in dataclasses.fields(target))
                raise UserError(f"{source}: unknown key '{section}.{key}' (valid: {valid})")
            setattr(target, key, _coerce(value, hints[key], f"{section}.{key}", source))


# Ranges a type alone cannot express: key -> (test, what the value must be). Checked up front, so a bad value
# fails before any data is read instead of as a ZeroDivisionError or a diverging run hours later.
RANGES: dict[str, tuple[Any, str]] = {
    **{key: (lambda v: v >= 1, "at least 1") for key in (
        "data.short_side", "data.crop_size", "model.num_classes", "train.num_seg", "train.batch_size",
        "train.epochs", "train.log_interval", "train.accumulate", "valid.num_seg", "valid.batch_size",
        "test.num_seg", "test.batch_size")},
    **{key: (lambda v: v >= 0, "0 or more") for key in (
        "train.save_interval", "train.checkpoint_steps", "train.warmup_epochs", "test.max_views_per_batch",
        "train.early_stop_patience",
        "model.shift_segments")},
    "data.num_workers": (lambda v: v >= -1, "-1 (sized to the machine), 0 or positive"),
    "model.shift_div": (lambda v: v >= 2, "at least 2"),
    "model.freeze_stages": (lambda v: -1 <= v <= 4, "-1 (off) or 0..4 (stem, then layer1..layerN)"),
    "train.mixup_alpha": (lambda v: v >= 0, "0 (off) or positive"),
    "train.cutmix_alpha": (lambda v: v >= 0, "0 (off) or positive"),
    "train.mix_prob": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "train.mix_switch_prob": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "model.dropout": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "model.fc_std": (lambda v: v > 0, "positive"),
    "train.lr": (lambda v: v > 0, "positive"),
    "train.lr_gamma": (lambda v: v > 0, "positive"),
    "train.warmup_ratio": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "train.fc_lr_mult": (lambda v: v > 0, "positive"),
    "train.momentum": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "train.weight_decay": (lambda v: v >= 0, "0 or more"),
    "train.label_smoothing": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "train.clip_grad_norm": (lambda v: v >= 0, "0 (off) or positive"),
    "train.max_bad_fraction": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
}


def validate(cfg: Config) -> None:
    """Check values that a type alone cannot (choices and ranges); the error names the key and the value."""
    for dotted, options in CHOICES.items():
        value = _get(cfg, dotted)
        if value not in options:
            raise UserError(f"config: {dotted} is {value!r}; choose one of {', '.join(options)}")
    for dotted, (ok, wanted) in RANGES.items():
        value = _get(cfg, dotted)
        if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise UserError(f"config: {dotted} is {value!r}; it must be {wanted}")
    if any(step < 1 for step in cfg.train.lr_steps):
        raise UserError(f"config: train.lr_steps is {cfg.train.lr_steps}; every epoch in it must be at least 1")
    if not cfg.data.crop_scales or not all(math.isfinite(s) and 0.0 < s <= 1.0 and int(s * cfg.data.short_side) >= 1
                                           for s in cfg.data.crop_scales):
        raise UserError(f"config: data.crop_scales is {cfg.data.crop_scales}; give one or more fractions in (0, 1] "
                        "of data.short_side (at least one pixel each)")
    if cfg.data.crop_size > cfg.data.short_side:
        raise UserError(f"config: data.crop_size ({cfg.data.crop_size}) exceeds data.short_side "
                        f"({cfg.data.short_side})")


def _get(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def save_config(cfg: Config, path: str | Path) -> None:
    write_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise UserError(f"override key {dotted!r}: expected section.key, e.g. train.lr")
    return {parts[0]: {parts[1]: value}}


def _coerce(value: Any, hint: Any, name: str, source: str) -> Any:
    def bad() -> UserError:
        return UserError(f"{source}: {name} must be {_type_name(hint)}, got {value!r}")

    origin = typing.get_origin(hint)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise bad()
        return [_coerce(v, item_hint, name, source) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad()
        return str(value)
    raise TypeError(f"unsupported config type {hint}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))
