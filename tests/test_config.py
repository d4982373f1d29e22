from pathlib import Path

import pytest

from tsnctl.config import Config, load_config
from tsnctl.errors import UserError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_are_the_reference_recipe():
    cfg = Config()
    assert (cfg.model.backbone, cfg.model.dropout, cfg.model.fc_std) == ("resnet50", 0.4, 0.01)
    assert (cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay) == (0.01, 0.9, 1e-4)
    assert (cfg.train.lr_steps, cfg.train.epochs, cfg.train.clip_grad_norm) == ([40, 80], 100, 40.0)
    assert (cfg.test.num_seg, cfg.test.crop) == (25, "ten")


@pytest.mark.parametrize(("name", "num_seg"), [("tsn_r50_k400_seg3.yaml", 3), ("tsn_r50_k400_seg8.yaml", 8)])
def test_shipped_reference_configs(name, num_seg):
    cfg = load_config(CONFIGS / name)
    assert cfg.train.num_seg == cfg.valid.num_seg == num_seg
    assert (cfg.test.num_seg, cfg.test.crop) == (25, "ten")
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.lr_steps, cfg.train.epochs) == (32, 0.01, [40, 80], 100)
    assert (cfg.model.backbone, cfg.model.num_classes, cfg.model.dropout, cfg.model.fc_std) == (
        "resnet50", 400, 0.4, 0.01)
    assert (cfg.train.weight_decay, cfg.train.clip_grad_norm, cfg.train.momentum) == (1e-4, 40.0, 0.9)
    assert (cfg.data.short_side, cfg.data.crop_size) == (256, 224)


def test_demo_config_loads():
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.model.backbone == "resnet18"


def test_overrides_are_typed():
    cfg = load_config(None, ["train.lr=0.02", "train.lr_steps=[3, 5]", "test.crop=three", "data.root=/x"])
    assert cfg.train.lr == 0.02 and cfg.train.lr_steps == [3, 5]
    assert cfg.test.crop == "three" and cfg.data.root == "/x"
    assert isinstance(load_config(None, ["train.lr=1"]).train.lr, float)


@pytest.mark.parametrize(("override", "message"), [
    ("train.lrr=0.1", "unknown key 'train.lrr'"),
    ("trian.lr=0.1", "unknown section 'trian'"),
    ("train.epochs=ten", "train.epochs must be an integer, got 'ten'"),
    ("train.lr_steps=5", "train.lr_steps must be a list of an integer"),
    ("test.crop=five", "test.crop is 'five'; choose one of ten, three, center"),
    ("train.lr", "expected section.key=value"),
    ("data.crop_size=300", "exceeds data.short_side"),
    ("data.crop_scales=[]", "data.crop_scales is []; give one or more fractions in (0, 1]"),
    ("data.crop_scales=[1.0, 1.5]", "data.crop_scales is [1.0, 1.5]; give one or more fractions in (0, 1]"),
    ("data.crop_scales=[0]", "data.crop_scales is [0.0]; give one or more fractions in (0, 1]"),
    ("data.crop_scales=[0.001]", "data.crop_scales is [0.001]; give one or more fractions in (0, 1]"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, [override])


def test_bad_yaml_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  backbone: resnet18\n  depht: 3\n")
    with pytest.raises(UserError, match=r"c.yaml: unknown key 'model.depht'"):
        load_config(path)
    path.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match=r"c.yaml:\d+: not valid YAML"):
        load_config(path)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
