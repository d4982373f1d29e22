"""TSM through the CLI on the direction demo data: train with warm-up and fc lr, test with TenCrop, export."""

import csv

import onnx
import pytest
from typer.testing import CliRunner

from tsnctl.cli import app

runner = CliRunner()
pytestmark = pytest.mark.slow


def run(*args, code=0):
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == code, result.output
    return result


def test_tsm_lifecycle_on_direction_data(tmp_path):
    run("demo-data", tmp_path / "data", "--kind", "direction", "--train-per-class", 2, "--val-per-class", 1)
    assert (tmp_path / "data" / "labels.txt").read_text().split() == ["0", "drift_up", "1", "drift_down", "2",
                                                                        "zoom_in", "3", "zoom_out"]
    overrides = [
        f"data.train_list={tmp_path / 'data' / 'train_videos.txt'}",
        f"data.test_list={tmp_path / 'data' / 'val_videos.txt'}",
        f"data.label_file={tmp_path / 'data' / 'labels.txt'}", "data.format=video",
        "data.short_side=40", "data.crop_size=32", "data.num_workers=0",
        "model.backbone=resnet18", "model.num_classes=4", "model.temporal_shift=true",
        "train.num_seg=4", "train.batch_size=4", "train.epochs=2", "train.lr=0.01", "train.lr_steps=[5]",
        "train.warmup_epochs=2", "train.warmup_ratio=0.1", "train.fc_lr_mult=5",
        "test.num_seg=3", "test.batch_size=2",
    ]
    args = [x for o in overrides for x in ("-o", o)]
    run("train", *args, "--output", tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.001, 0.0055])  # backbone group, warming up

    result = run("test", "-w", tmp_path / "run" / "last.pt", *args)
    assert "3 segments x 10 crops (TenCrop) = 30 views" in result.output
    result = run("export", "-w", tmp_path / "run" / "last.pt", "-o", tmp_path / "tsm.onnx")
    assert "onnx.checker ok" in result.output
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "tsm.onnx")).metadata_props}
    assert meta["tsnctl.temporal_shift"] == "1/8 channels each way over 3 segments"
    run("predict", tmp_path / "data" / "videos" / "zoom_out" / "val_000.mp4", "-m", tmp_path / "tsm.onnx")

    bad = run("demo-data", tmp_path / "x", "--kind", "sideways", code=2)
    assert "choose one of shapes, direction" in bad.output
