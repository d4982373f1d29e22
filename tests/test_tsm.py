"""Temporal shift (TSM): the shift itself, order sensitivity, view regrouping, export, warm-up and fc lr."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tsnctl.config import Config, ModelConfig, TrainConfig, load_config
from tsnctl.deploy.export import to_onnx
from tsnctl.engine.optim import build_optimizer, build_scheduler, lr_factor
from tsnctl.errors import UserError
from tsnctl.models.tsm import ShiftConv2d, set_num_segments, temporal_shift
from tsnctl.models.tsn import TSN
from tsnctl.weights.init import build_model
from tsnctl.weights.load import LoadedModel


def tsm(backbone: str = "resnet18", **kwargs) -> TSN:
    torch.manual_seed(0)
    # fc_std 1: logits of a random network far above float noise, so "changes" and "matches" mean something.
    return build_model(ModelConfig(backbone=backbone, num_classes=5, fc_std=1.0, temporal_shift=True, **kwargs))


def test_shift_moves_one_fold_from_the_next_frame_and_one_from_the_previous():
    # 2 clips x 3 frames, 8 channels, div 4: fold 2. Value = 100*clip + 10*frame + channel.
    x = torch.tensor([[100 * n + 10 * t + c for c in range(8)] for n in range(2) for t in range(3)], dtype=torch.float)
    out = temporal_shift(x.view(6, 8, 1, 1), num_segments=3, shift_div=4).view(2, 3, 8)
    for n in range(2):
        for t in range(3):
            assert out[n, t, :2].tolist() == ([100 * n + 10 * (t + 1) + c for c in range(2)] if t < 2 else [0, 0])
            assert out[n, t, 2:4].tolist() == ([100 * n + 10 * (t - 1) + c for c in (2, 3)] if t > 0 else [0, 0])
            assert out[n, t, 4:].tolist() == [100 * n + 10 * t + c for c in range(4, 8)]


def test_tsm_depends_on_frame_order_and_tsn_does_not():
    clips = torch.randn(2, 4, 3, 32, 32)
    shifted = tsm().eval()
    set_num_segments(shifted, 4)
    plain = TSN("resnet18", num_classes=5, fc_std=1.0).eval()
    with torch.no_grad():
        assert (shifted(clips) - shifted(clips.flip(1))).abs().max() > 1e-2
        torch.testing.assert_close(plain(clips.flip(1)), plain(clips), rtol=1e-4, atol=1e-4)


def test_crops_are_regrouped_into_clips_of_num_segments():
    # Test views are [crop0 x T, crop1 x T, ...]: each crop is shifted as its own clip, then all are averaged.
    model = tsm().eval()
    set_num_segments(model, 3)
    crop0, crop1 = torch.randn(1, 3, 3, 32, 32), torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        both = model.forward_features(torch.cat([crop0, crop1], dim=1))
        separate = torch.cat([model.forward_features(crop0), model.forward_features(crop1)], dim=1)
    torch.testing.assert_close(both, separate, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="not a multiple"):
        model(torch.randn(1, 4, 3, 32, 32))


@pytest.mark.parametrize(("depth", "blocks"), [(18, 8), (50, 16)])  # BasicBlock and Bottleneck
def test_each_residual_block_is_shifted_without_new_weights(depth, blocks):
    model = tsm(f"resnet{depth}")
    assert len([m for m in model.modules() if isinstance(m, ShiftConv2d)]) == blocks
    set_num_segments(model, 2)
    model(torch.randn(1, 2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_tsm_keeps_the_resnet_keys():
    # No new weights: a plain TSN state dict (ImageNet, TSN or MMAction2 TSM weights) loads strictly.
    tsm().load_state_dict(TSN("resnet18", num_classes=5).state_dict(), strict=True)


def test_fixed_shift_segments_ignore_the_mode():
    model = tsm(shift_segments=2)
    set_num_segments(model, 8)
    assert {m.num_segments for m in model.modules() if isinstance(m, ShiftConv2d)} == {2}


def test_exported_tsm_matches_torch_for_other_batches_and_view_counts(tmp_path):
    cfg = Config()
    cfg.model = ModelConfig(backbone="resnet18", num_classes=5, fc_std=1.0, temporal_shift=True)
    cfg.data.short_side, cfg.data.crop_size = 40, 32
    cfg.test.num_seg, cfg.test.crop = 4, "center"
    model = tsm().eval()
    report = to_onnx(LoadedModel(model, cfg, [f"c{i}" for i in range(5)]), tmp_path / "tsm.onnx")
    assert report.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "tsm.onnx"), providers=["CPUExecutionProvider"])
    for batch, views in ((1, 4), (5, 4), (2, 8)):  # the export example was batch 2, 4 views
        clips = torch.randn(batch, views, 3, 32, 32)
        with torch.no_grad():
            expected, reversed_ = model(clips).numpy(), model(clips.flip(1)).numpy()
        got = session.run(None, {"clips": clips.numpy()})[0]
        assert np.abs(got - expected).max() < 1e-4
        assert np.abs(got - reversed_).max() > 1e-2  # the shift is live in the graph, not a constant


def test_warmup_then_steps_and_the_fc_group():
    cfg = TrainConfig(lr=0.02, lr_steps=[3, 5], lr_gamma=0.1, warmup_epochs=2, warmup_ratio=0.1, fc_lr_mult=5.0)
    assert [round(lr_factor(e, cfg), 6) for e in range(6)] == [0.1, 0.55, 1.0, 0.1, 0.1, 0.01]
    model = TSN("resnet18", num_classes=5)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    fc_group = optimizer.param_groups[1]
    assert {id(p) for p in fc_group["params"]} == {id(model.head.fc.weight), id(model.head.fc.bias)}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    lrs = []
    for _ in range(4):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    expected = [[0.002, 0.01], [0.011, 0.055], [0.02, 0.1], [0.002, 0.01]]
    assert [lr for pair in lrs for lr in pair] == pytest.approx([lr for pair in expected for lr in pair])


def test_defaults_keep_the_tsn_schedule():
    cfg = TrainConfig()
    optimizer = build_optimizer(TSN("resnet18", num_classes=5), cfg)
    assert len(optimizer.param_groups) == 1
    assert [lr_factor(e, cfg) for e in (0, 39, 40, 79, 80)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_tsm_recipe_config_and_choices():
    cfg = load_config("configs/tsm_r50_k400_seg8.yaml")
    assert cfg.model.temporal_shift and cfg.model.shift_div == 8 and cfg.train.num_seg == 8
    assert (cfg.train.lr, cfg.train.warmup_epochs, cfg.train.fc_lr_mult) == (0.02, 5, 5.0)
    assert (cfg.test.num_seg, cfg.test.crop) == (8, "ten")
    with pytest.raises(UserError, match="model.shift_place is 'block'; choose one of residual"):
        load_config(overrides=["model.shift_place=block"])
    with pytest.raises(UserError, match="warmup_ratio"):
        load_config(overrides=["train.warmup_ratio=0"])


def test_direction_pairs_are_time_reversals(tmp_path):
    import cv2

    from tsnctl.demo.direction import render_direction_clip

    def frames(cls):
        path = tmp_path / f"{cls}.mp4"
        render_direction_clip(path, cls, np.random.default_rng(7), num_frames=12)
        capture = cv2.VideoCapture(str(path))
        out = []
        while (ok_frame := capture.read())[0]:
            out.append(ok_frame[1].astype(float))
        return np.stack(out)

    for forward, backward in (("drift_up", "drift_down"), ("zoom_in", "zoom_out")):
        a, b = frames(forward), frames(backward)
        assert len(a) == len(b) == 12
        # Same frames in the opposite order (up to noise and codec error); in the same order they differ.
        assert np.abs(a[::-1] - b).mean() < 8
        assert np.abs(a - b).mean() > 2 * np.abs(a[::-1] - b).mean()


def test_chunked_test_passes_keep_whole_clips_for_the_shift():
    from tsnctl.engine.evaluate import chunked_logits

    model = tsm().eval()
    set_num_segments(model, 3)
    clips = torch.randint(0, 256, (1, 9, 3, 32, 32), dtype=torch.uint8)  # 3 crops x 3 segments, as loaded
    with torch.no_grad():
        whole = chunked_logits(model, clips, torch.device("cpu"))
        chunked = chunked_logits(model, clips, torch.device("cpu"), max_views=4)  # rounded down to 3 views
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-3)
