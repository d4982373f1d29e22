"""model.bn_running_var=biased: BatchNorm's running variance follows the reference's (Paddle's) update."""

from __future__ import annotations

import onnxruntime
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.config import Config
from tsnctl.models.bn import BiasedVarBatchNorm2d
from tsnctl.models.tsn import TSN
from tsnctl.weights.checkpoint import save_checkpoint
from tsnctl.weights.init import build_model


def _twins() -> tuple[TSN, TSN]:
    """The same float64 resnet18 TSN twice: torch's BatchNorm, and the reference's running variance."""
    torch.manual_seed(0)
    plain = TSN("resnet18", 3).double()
    biased = TSN("resnet18", 3, bn_running_var="biased").double()
    biased.load_state_dict(plain.state_dict())
    return plain, biased


def _reference_update(model: TSN, clips: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Paddle's update, computed here from each BatchNorm's inputs: r = 0.9 r + 0.1 var_biased(x)."""
    expected = {n: m.running_var.clone() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, args, n=n: inputs.__setitem__(n, args[0].detach()))
             for n, m in model.named_modules() if n in expected]
    model.train()
    with torch.no_grad():
        for clip in clips:
            model(clip)
            for name, x in inputs.items():
                expected[name] = 0.9 * expected[name] + 0.1 * x.var(dim=(0, 2, 3), unbiased=False)
    for hook in hooks:
        hook.remove()
    return expected


def test_running_var_is_the_references_update_and_outputs_are_torchs():
    plain, biased = _twins()
    assert sum(isinstance(m, BiasedVarBatchNorm2d) for m in biased.modules()) == 20
    torch.manual_seed(1)
    clips = [torch.randn(2, 3, 3, 32, 32, dtype=torch.float64) for _ in range(3)]  # 6 images a step
    expected = _reference_update(_twins()[1], clips)
    plain.train()
    biased.train()
    with torch.no_grad():
        for step, clip in enumerate(clips):
            torch.manual_seed(step)  # the same dropout mask for both
            out = biased(clip)
            torch.manual_seed(step)
            torch.testing.assert_close(out, plain(clip), rtol=0, atol=1e-12)  # train output unchanged
    got = dict(biased.named_modules())
    torch_bn = dict(plain.named_modules())
    for name, want in expected.items():
        torch.testing.assert_close(got[name].running_var, want, rtol=1e-6, atol=0)
        torch.testing.assert_close(got[name].running_mean, torch_bn[name].running_mean, rtol=1e-12, atol=1e-12)
        assert int(got[name].num_batches_tracked) == 3
    # torch's own update is the unbiased one, measurably different at this batch size
    last = "backbone.layer4.1.bn2"
    assert not torch.allclose(torch_bn[last].running_var, expected[last], rtol=1e-4, atol=0)
    plain.eval()
    biased.eval()
    plain.load_state_dict(biased.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(biased(clips[0]), plain(clips[0]), rtol=0, atol=0)  # eval: torch's BN


def test_float32_matches_the_reference_to_1e6():
    torch.manual_seed(0)
    model = TSN("resnet18", 3, bn_running_var="biased")
    clips = [torch.randn(2, 3, 3, 32, 32) for _ in range(2)]
    reference = TSN("resnet18", 3).double()
    reference.load_state_dict(model.state_dict())
    expected = _reference_update(reference, [c.double() for c in clips])
    model.train()
    with torch.no_grad():
        for clip in clips:
            model(clip)
    for name, module in model.named_modules():
        if name in expected:
            torch.testing.assert_close(module.running_var.double(), expected[name], rtol=1e-5, atol=1e-7)


def test_config_option_keeps_checkpoint_keys_and_survives_sync_bn():
    cfg = Config().model
    cfg.backbone, cfg.num_classes, cfg.bn_running_var = "resnet18", 3, "biased"
    biased = build_model(cfg)
    plain = TSN("resnet18", 3)
    assert list(biased.state_dict()) == list(plain.state_dict())
    biased.load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(biased.state_dict(), strict=True)
    # sync_bn: SyncBatchNorm replaces every BatchNorm (torch's unbiased update, see docs/config.md), same keys
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(biased)
    assert not any(isinstance(m, BiasedVarBatchNorm2d) for m in synced.modules())
    assert list(synced.state_dict()) == list(plain.state_dict())


def test_onnx_export_of_a_biased_model_equals_its_checkpoint(tmp_path):
    cfg = Config()
    cfg.model.backbone, cfg.model.num_classes, cfg.model.bn_running_var = "resnet18", 3, "biased"
    cfg.data.short_side, cfg.data.crop_size, cfg.test.num_seg, cfg.test.crop = 40, 32, 2, "center"
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 2, 3, 32, 32))  # running statistics that are not the init's
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "epoch": 0, "config": cfg.to_dict(),
                                        "class_names": ["a", "b", "c"]})
    result = CliRunner().invoke(app, ["export", "-w", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        want = model(x).numpy()
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), rtol=1e-4, atol=1e-4)


def test_unknown_choice_is_a_user_error():
    from tsnctl.config import load_config
    from tsnctl.errors import UserError
    with pytest.raises(UserError, match=r"model.bn_running_var is 'paddle'; choose one of unbiased, biased"):
        load_config(overrides=["model.bn_running_var=paddle"])
