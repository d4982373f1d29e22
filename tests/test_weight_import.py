"""Importing foreign weights: reference .pdparams, MMAction2 and torchvision files give the source's logits.

The files are written here from a random torchvision ResNet-50 + fc with the exact key names and layouts
of each format (key maps written independently of tsnctl's), then loaded through tsnctl.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torchvision

from tsnctl.config import Config, load_config
from tsnctl.errors import UserError
from tsnctl.models.tsn import TSN
from tsnctl.weights.formats import read_weights
from tsnctl.weights.init import build_model, load_backbone_weights
from tsnctl.weights.load import convert_weights, load_for_inference

NUM_CLASSES = 400


def random_resnet50(num_classes: int = NUM_CLASSES, seed: int = 0) -> torch.nn.Module:
    """torchvision ResNet-50 with random weights and random BN statistics (so a swapped key shows)."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(num_classes=num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(7)
        model.fc.weight.normal_(0, 0.05)
        model.fc.bias.normal_(0, 0.05)
    return model.eval()


def reference_state(resnet: torch.nn.Module, prefix: str = "backbone.", head: bool = True) -> dict:
    """The PaddleVideo TSN state dict: ``res{S}{letter}.conv{k}``, ``_batch_norm._mean/_variance``, fc [in, out]."""
    sd = {k: v.numpy().copy() for k, v in resnet.state_dict().items()}
    out = {}

    def conv_bn(pd_name: str, conv: str, bn: str) -> None:
        out[f"{prefix}{pd_name}._conv.weight"] = sd[f"{conv}.weight"]
        for pd_field, tv_field in (("weight", "weight"), ("bias", "bias"), ("_mean", "running_mean"),
                                   ("_variance", "running_var")):
            out[f"{prefix}{pd_name}._batch_norm.{pd_field}"] = sd[f"{bn}.{tv_field}"]

    conv_bn("conv", "conv1", "bn1")
    for stage, layer in enumerate([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4], start=2):
        for index, block in enumerate(layer):
            name, tv = f"res{stage}{chr(ord('a') + index)}", f"layer{stage - 1}.{index}"
            for k in range(3):
                conv_bn(f"{name}.conv{k}", f"{tv}.conv{k + 1}", f"{tv}.bn{k + 1}")
            if block.downsample is not None:
                conv_bn(f"{name}.short", f"{tv}.downsample.0", f"{tv}.downsample.1")
    if head:
        out["head.fc.weight"] = np.ascontiguousarray(sd["fc.weight"].T)  # Paddle's Linear: [in, out]
        out["head.fc.bias"] = sd["fc.bias"]
    return out


def write_pdparams(path, state: dict, protocol: int = 4):
    payload = dict(state)
    payload["StructuredToParameterName@@"] = {k: f"param_{i}" for i, k in enumerate(state)}
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=protocol)
    return path


def mmaction_state(resnet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """MMAction2 1.x names: ConvModule ``.conv``/``.bn``, ``downsample.conv/bn``, ``cls_head.fc_cls``."""
    out = {}
    for key, value in resnet.state_dict().items():
        parts = key.split(".")
        if parts[0] == "fc":
            out[f"cls_head.fc_cls.{parts[1]}"] = value
        elif parts[0] in ("conv1", "bn1"):
            out[f"backbone.conv1.{'conv' if parts[0] == 'conv1' else 'bn'}.{parts[1]}"] = value
        elif parts[2] == "downsample":
            out[f"backbone.{parts[0]}.{parts[1]}.downsample.{'conv' if parts[3] == '0' else 'bn'}.{parts[4]}"] = value
        else:
            kind, number = parts[2][:-1], parts[2][-1]
            out[f"backbone.{parts[0]}.{parts[1]}.conv{number}.{'conv' if kind == 'conv' else 'bn'}.{parts[3]}"] = value
    return out


def source_logits(resnet: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """What a TSN computes, from the source model: features averaged over views, then its fc."""
    trunk = torch.nn.Sequential(*list(resnet.children())[:-1])
    with torch.no_grad():
        features = torch.stack([trunk(clip).flatten(1).mean(0) for clip in clips])
        return resnet.fc(features)


@pytest.fixture(scope="module")
def resnet():
    return random_resnet50()


@pytest.fixture(scope="module")
def clips():
    return torch.randn(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def tsn_logits(model: torch.nn.Module, clips: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(clips)


def test_reference_pdparams_gives_the_source_logits(tmp_path, resnet, clips):
    state = reference_state(resnet)
    assert len(state) == 265 + 2  # the counts of the released checkpoints
    path = write_pdparams(tmp_path / "TSN_k400.pdparams", state)
    loaded = load_for_inference(path)
    assert loaded.fmt == "reference .pdparams"
    torch.testing.assert_close(tsn_logits(loaded.model, clips), source_logits(resnet, clips), rtol=1e-5, atol=1e-6)
    assert loaded.class_names[:2] == ["abseiling", "air_drumming"] and loaded.class_names_from == "Kinetics-400"
    bn = loaded.model.backbone.layer3[2].bn2
    assert torch.equal(bn.running_var, resnet.layer3[2].bn2.running_var)
    assert int(bn.num_batches_tracked) == 0  # absent in reference files: filled, not reported missing


def test_pdparams_written_by_numpy_1_with_protocol_2(tmp_path, resnet):
    """Older files name ``numpy.core.multiarray`` and spell bytes with ``_codecs.encode``."""
    state = {k: v for k, v in reference_state(resnet).items() if k.startswith(("backbone.res5c.", "head."))}
    data = pickle.dumps({**state, "StructuredToParameterName@@": {}}, protocol=2)
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data and b"_codecs" in data
    (tmp_path / "old.pdparams").write_bytes(data)
    weights = read_weights(tmp_path / "old.pdparams")
    assert len(weights.tensors) == len(state) == 17
    assert torch.equal(weights.tensors["backbone.layer4.2.bn3.running_var"], resnet.layer4[2].bn3.running_var)
    assert torch.equal(weights.tensors["head.fc.weight"], resnet.fc.weight)


class _HistoryBuffer:
    """Stands for mmengine's HistoryBuffer while writing the file (the class mmengine pickles)."""

    def __init__(self):
        self._log_history = np.arange(4.0)
        self._count_history = np.ones(4)
        self._max_length = 1000000


def test_mmaction2_checkpoint_gives_the_source_logits(tmp_path, resnet, clips, monkeypatch):
    modules = {"mmengine": types.ModuleType("mmengine"), "mmengine.logging": types.ModuleType("mmengine.logging"),
               "mmengine.logging.history_buffer": types.ModuleType("mmengine.logging.history_buffer")}
    _HistoryBuffer.__module__, _HistoryBuffer.__qualname__ = "mmengine.logging.history_buffer", "HistoryBuffer"
    modules["mmengine.logging.history_buffer"].HistoryBuffer = _HistoryBuffer
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    checkpoint = {"meta": {"epoch": 100, "seed": 0, "mmengine_version": "0.10.4", "lr": np.float64(0.01)},
                  "state_dict": mmaction_state(resnet),
                  "message_hub": {"log_scalars": {"train/loss": _HistoryBuffer()}}}
    torch.save(checkpoint, tmp_path / "tsn_mmaction.pth")
    for name in modules:  # loading must not need (or import) mmengine
        monkeypatch.delitem(sys.modules, name)
    loaded = load_for_inference(tmp_path / "tsn_mmaction.pth")
    assert loaded.fmt == "MMAction2 checkpoint"
    torch.testing.assert_close(tsn_logits(loaded.model, clips), source_logits(resnet, clips), rtol=1e-5, atol=1e-6)
    assert int(loaded.model.backbone.bn1.num_batches_tracked) == 7


def test_mmaction2_tsm_checkpoint_loads_into_a_temporal_shift_model(tmp_path, resnet):
    """MMAction2's ResNetTSM wraps each block's first conv (``conv1.conv.net.weight``); the shift has no weights."""
    state = {key.replace(".conv1.conv.weight", ".conv1.conv.net.weight") if ".layer" in key else key: value
             for key, value in mmaction_state(resnet).items()}
    assert "backbone.layer1.0.conv1.conv.net.weight" in state
    torch.save({"state_dict": state}, tmp_path / "tsm_mmaction.pth")
    cfg = Config()
    cfg.model.num_classes, cfg.model.temporal_shift, cfg.model.shift_segments = NUM_CLASSES, True, 4
    loaded = load_for_inference(tmp_path / "tsm_mmaction.pth", cfg)
    expected = TSN("resnet50", NUM_CLASSES, temporal_shift=True, shift_segments=4)
    expected.backbone.load_state_dict({k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")})
    expected.head.fc.load_state_dict(resnet.fc.state_dict())
    clips = torch.randn(1, 4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(tsn_logits(loaded.model, clips), tsn_logits(expected, clips), rtol=1e-5, atol=1e-6)
    reversed_frames = tsn_logits(loaded.model, clips.flip(1))
    assert (reversed_frames - tsn_logits(loaded.model, clips)).abs().max() > 1e-4  # the shift is really there


def test_torchvision_state_dict_and_convert_round_trip(tmp_path, resnet, clips):
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")
    out = convert_weights(tmp_path / "resnet50.pth", tmp_path / "converted.pt")
    assert out.fmt == "torchvision ResNet state dict" and out.num_classes == 400
    loaded = load_for_inference(tmp_path / "converted.pt")
    assert loaded.fmt == "tsnctl checkpoint" and loaded.class_names[0] == "abseiling"
    assert loaded.cfg.model.backbone == "resnet50"
    torch.testing.assert_close(tsn_logits(loaded.model, clips), source_logits(resnet, clips), rtol=1e-5, atol=1e-6)


class ShellPayload:
    """Unpickles into ``os.system("touch MARKER")``: if the marker appears, loading ran code from the file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pdparams", "wb") as f:
        pickle.dump({"backbone.conv._conv.weight": ShellPayload(marker)}, f, protocol=4)
    with pytest.raises(UserError, match=r"evil.pdparams: refused to load: refused global (posix|os|nt)\.system"):
        read_weights(tmp_path / "evil.pdparams")
    torch.save({"state_dict": {"conv1.weight": ShellPayload(marker)}}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match=r"evil.pth: refused to load: it needs (posix|os|nt)\.system"):
        read_weights(tmp_path / "evil.pth")
    assert not marker.exists()


def test_missing_unexpected_and_mismatched_keys_are_named(tmp_path, resnet):
    state = reference_state(resnet)
    del state["backbone.res3b.conv1._batch_norm._mean"]
    state["backbone.res6a.conv0._conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    state["backbone.res2a.conv0._conv.weight"] = np.zeros((64, 64, 3, 3), np.float32)
    with pytest.raises(UserError) as info:
        load_for_inference(write_pdparams(tmp_path / "bad.pdparams", state))
    message = str(info.value)
    assert "missing (1): backbone.layer2.1.bn2.running_mean" in message
    assert "unexpected (1): backbone.res6a.conv0._conv.weight" in message
    assert "shape mismatch (1): backbone.res2a.conv0._conv.weight [64, 64, 3, 3] (model [64, 64, 1, 1])" in message


def test_head_with_other_class_count_is_named_and_config_fixes_it(tmp_path):
    small = random_resnet50(num_classes=101, seed=2)
    path = write_pdparams(tmp_path / "ucf.pdparams", reference_state(small))
    with pytest.raises(UserError, match="the head has 101 classes but model.num_classes is 400"):
        load_for_inference(path)
    loaded = load_for_inference(path, load_config(None, ["model.num_classes=101"]))
    assert loaded.class_names[0] == "class_0"
    assert load_for_inference(path, overrides=["model.num_classes=101"]).cfg.model.num_classes == 101


def test_backbone_only_pdparams_initialises_training_with_or_without_prefix(tmp_path, resnet):
    for prefix in ("backbone.", ""):
        path = write_pdparams(tmp_path / f"ResNet50_pretrain{prefix}.pdparams", reference_state(resnet, prefix, False))
        model = TSN("resnet50", 10)
        load_backbone_weights(model, str(path), "resnet50")
        assert torch.equal(model.backbone.layer4[2].conv3.weight, resnet.layer4[2].conv3.weight)
        with pytest.raises(UserError, match="without a classifier head"):
            load_for_inference(path)
    with pytest.raises(UserError, match="does not fit resnet18"):
        load_backbone_weights(TSN("resnet18", 10), str(path), "resnet18")


def test_init_from_a_full_model_reinitialises_only_a_mismatched_head(tmp_path, resnet, caplog):
    path = write_pdparams(tmp_path / "k400.pdparams", reference_state(resnet))
    cfg = Config()
    cfg.model.num_classes, cfg.model.init_from, cfg.model.pretrained = 10, str(path), "imagenet"
    with caplog.at_level(logging.INFO, logger="tsnctl"):
        model = build_model(cfg.model)  # init_from wins: no ImageNet download is attempted
    assert "the head has 400 classes, the model 10: re-initialising the head only" in caplog.text
    assert torch.equal(model.backbone.conv1.weight, resnet.conv1.weight)
    assert model.head.fc.weight.shape == (10, 2048)
    cfg.model.num_classes = 400
    model = build_model(cfg.model)
    assert torch.equal(model.head.fc.weight, resnet.fc.weight)


def test_files_that_are_no_weights_get_one_line_errors(tmp_path):
    (tmp_path / "text.pdparams").write_text("hello")
    with pytest.raises(UserError, match="not a readable weights file"):
        read_weights(tmp_path / "text.pdparams")
    (tmp_path / "cut.pdparams").write_bytes(pickle.dumps({"a": np.zeros(3)}, protocol=4)[:40])
    with pytest.raises(UserError, match="cut.pdparams: not a readable .pdparams"):
        read_weights(tmp_path / "cut.pdparams")
    torch.save({"weird.key": torch.zeros(1)}, tmp_path / "odd.pt")
    with pytest.raises(UserError, match="unrecognised weight names"):
        read_weights(tmp_path / "odd.pt")


def test_cli_refuses_a_crafted_pdparams_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from tsnctl.cli import app

    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pdparams", "wb") as f:
        pickle.dump({"head.fc.weight": ShellPayload(marker)}, f, protocol=4)
    for args in (["test", "-w", tmp_path / "evil.pdparams"],
                 ["convert-weights", tmp_path / "evil.pdparams", "-o", tmp_path / "out.pt"]):
        result = CliRunner().invoke(app, list(map(str, args)))
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "refused to load" in result.output
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_predict_preset_is_refused_with_a_stream(tmp_path):
    from typer.testing import CliRunner

    from tsnctl.cli import app

    result = CliRunner().invoke(app, ["predict", "--stream", "0", "-w", str(tmp_path / "w.pt"), "--preset",
                                      "paddlevideo"])
    assert result.exit_code == 2 and "apply to clips, not to --stream" in result.output
