"""The small-data recipe's parts: cosine schedule, zero-init of residual branches, lr finder, early stop."""

import math

import cv2
import numpy as np
import pytest
import torch

from tsnctl.config import ModelConfig, TrainConfig, load_config
from tsnctl.demo.textures import KINDS, render_motion_clip, render_texture_clip
from tsnctl.engine.lr_find import smooth, suggest
from tsnctl.engine.optim import build_optimizer, build_scheduler, cosine_factor, per_step
from tsnctl.errors import UserError
from tsnctl.weights.init import build_model


def test_cosine_warms_up_per_step_then_decays_to_zero():
    cfg = TrainConfig(epochs=4, warmup_epochs=1, warmup_ratio=0.1, lr_schedule="cosine")
    factors = [cosine_factor(s, cfg, 4) for s in range(17)]
    assert factors[:5] == pytest.approx([0.1, 0.325, 0.55, 0.775, 1.0])  # a ramp inside the first epoch
    assert factors[10] == pytest.approx(0.5) and factors[16] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))


def test_cosine_scheduler_steps_per_optimizer_step():
    cfg = TrainConfig(lr=0.1, epochs=2, lr_schedule="cosine")
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert per_step(cfg) and not per_step(TrainConfig())
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05)
    assert lrs[9] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 9 / 10)))


def test_adamw_and_schedule_choices_are_checked():
    assert isinstance(build_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="adamw")), torch.optim.AdamW)
    with pytest.raises(UserError, match="train.lr_schedule"):
        load_config(None, ["train.lr_schedule=linear"])
    with pytest.raises(UserError, match="train.label_smoothing"):
        load_config(None, ["train.label_smoothing=1.0"])


def test_zero_init_last_makes_each_residual_block_start_as_identity():
    plain = build_model(ModelConfig(backbone="resnet18", num_classes=3))
    zeroed = build_model(ModelConfig(backbone="resnet18", num_classes=3, zero_init_last=True))
    blocks = [b for layer in ("layer1", "layer2", "layer3", "layer4") for b in getattr(zeroed.backbone, layer)]
    assert all(float(b.bn2.weight.detach().abs().max()) == 0.0 for b in blocks)
    assert float(plain.backbone.layer1[0].bn2.weight.detach().min()) == 1.0
    assert zeroed.state_dict().keys() == plain.state_dict().keys()  # same checkpoint layout


def test_lr_suggestion_is_the_steepest_fall():
    lrs = list(np.geomspace(1e-5, 1.0, 60))
    # flat, then falling fastest around 1e-2, then diverging
    losses = [2.0 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 2))) + (5 * (lr - 0.1) if lr > 0.1 else 0)
              for lr in lrs]
    suggested = suggest(lrs, smooth(losses, beta=0.0))
    assert 3e-3 < suggested < 3e-2
    with pytest.raises(UserError, match="diverged"):
        suggest(lrs[:5], losses[:5])


@pytest.mark.parametrize("kind", ["textures", "motion"])
def test_new_generators_render_every_class(tmp_path, kind):
    names, render = KINDS[kind]
    rng = np.random.default_rng(0)
    for cls in names:
        assert render(tmp_path / f"{cls}.mp4", cls, rng, num_frames=6) == 6
        assert (tmp_path / f"{cls}.mp4").stat().st_size > 1000
    with pytest.raises(UserError):
        render_one = render_texture_clip if kind == "textures" else render_motion_clip
        render_one(tmp_path / "x.mp4", "nope", rng, num_frames=2)


def _edge_strength(path) -> float:
    """Mean gradient magnitude of a clip's frames (lightly smoothed, so the camera noise does not count)."""
    cap, values = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            return float(np.mean(values))
        gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 1.5)
        values.append(np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_motion_shows_in_a_single_frame(tmp_path, seed):
    """A frame-level TSN sees motion only as exposure blur: drifting and spinning clips of the same texture
    (the same seed draws the same texture) must have visibly softer edges than the still one."""
    strength = {}
    for cls in ("still", "drift", "spin"):
        render_motion_clip(tmp_path / f"{cls}.mp4", cls, np.random.default_rng(seed), num_frames=4)
        strength[cls] = _edge_strength(tmp_path / f"{cls}.mp4")
    assert strength["drift"] < 0.9 * strength["still"]
    assert strength["spin"] < 0.9 * strength["still"]


def test_lr_suggestion_ignores_falls_after_the_loss_rose():
    """A flat curve, a dip, then a noisy climb to divergence (as lr-find measured on the motion-only
    generator): the suggestion must come from before the lowest loss, not from a drop on the way up."""
    lrs = list(np.geomspace(1e-5, 1.0, 60))
    losses = [1.61 - (0.03 if 1e-3 < lr < 3e-3 else 0.0) + (2.0 * math.log10(lr / 3e-3) if lr > 3e-3 else 0.0)
              - (1.5 if 0.2 < lr < 0.3 else 0.0) for lr in lrs]
    assert 1e-4 < suggest(lrs, smooth(losses, beta=0.0)) < 3e-3
