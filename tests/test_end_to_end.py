"""The whole lifecycle on a tiny generated dataset: demo-data, extract, train, test, export, predict."""

import csv
import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

from tsnctl.cli import app

runner = CliRunner()
pytestmark = pytest.mark.slow


def run(*args):
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    run("demo-data", root / "data", "--train-per-class", 3, "--val-per-class", 2, "--seed", 1)
    for split in ("train", "val"):
        run("extract-frames", root / "data" / f"{split}_videos.txt", root / "frames", "--workers", 2)
    overrides = [
        f"data.train_list={root / 'frames' / 'train_videos_frames.txt'}",
        f"data.val_list={root / 'frames' / 'val_videos_frames.txt'}",
        f"data.test_list={root / 'frames' / 'val_videos_frames.txt'}",
        f"data.label_file={root / 'data' / 'labels.txt'}",
        "data.short_side=64", "data.crop_size=56", "data.num_workers=0",
        "model.backbone=resnet18", "model.num_classes=6",
        "train.batch_size=6", "train.epochs=2", "train.lr_steps=[1]", "valid.batch_size=6",
        "test.num_seg=3", "test.batch_size=4",
    ]
    args = [x for o in overrides for x in ("-o", o)]
    run("train", *args, "--output", root / "run", "--validate")
    return root, args


def test_train_writes_checkpoints_and_metrics(trained):
    root, _ = trained
    run_dir = root / "run"
    assert {"last.pt", "best.pt", "metrics.csv", "config.yaml"} <= {p.name for p in run_dir.iterdir()}
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [(r["epoch"], r["split"]) for r in rows] == [("1", "train"), ("1", "valid"), ("2", "train"), ("2", "valid")]
    assert float(rows[0]["lr"]) == pytest.approx(0.01) and float(rows[2]["lr"]) == pytest.approx(0.001)
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["class_names"][0] == "bouncing_ball"
    assert {"model", "optimizer", "scheduler", "config"} <= set(state)


def test_resume_continues_from_last_checkpoint(trained):
    root, args = trained
    result = run("train", *args, "-o", "train.epochs=3", "--output", root / "run", "--resume")
    assert "trained 1 epoch(s)" in result.output
    assert torch.load(root / "run" / "last.pt", weights_only=True)["epoch"] == 3


def test_test_command_scores_every_video(trained, tmp_path):
    root, args = trained
    scores, metrics = tmp_path / "scores.csv", tmp_path / "m.json"
    result = run("test", "-w", root / "run" / "best.pt", *args, "--save-scores", scores, "--metrics-json", metrics)
    assert "3 segments x 10 crops (TenCrop) = 30 views" in result.output
    rows = list(csv.reader(open(scores)))
    assert rows[0] == ["name", "label"] + [f"logit_{i}" for i in range(6)]
    assert len(rows) == 1 + 12 and rows[1][0] == "videos/bouncing_ball/val_000.mp4"
    m = json.loads(metrics.read_text())
    logits = torch.tensor([[float(v) for v in r[2:]] for r in rows[1:]])
    labels = torch.tensor([int(r[1]) for r in rows[1:]])
    assert m["top1"] == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item(), abs=1e-3)
    assert m["videos"] == 12
    center = run("test", "-w", root / "run" / "best.pt", *args, "--crop", "center", "--num-seg", 2)
    assert "2 segments x 1 crop (CenterCrop) = 2 views" in center.output


def test_export_and_predict_agree(trained, example_avi):
    root, _ = trained
    model_path = root / "model.onnx"
    result = run("export", "-w", root / "run" / "best.pt", "-o", model_path)
    assert "onnx.checker ok" in result.output
    meta = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
    assert json.loads(meta["tsnctl.class_names"])[1] == "rotating_stripes"
    assert meta["tsnctl.num_seg"] == "3" and meta["tsnctl.crop"] == "ten"

    clips = [example_avi, root / "frames" / "videos" / "falling_rain" / "val_000.mp4"]  # a video and a folder
    by_ckpt = json.loads(run("predict", *clips, "-w", root / "run" / "best.pt", "--json").stdout)
    by_onnx = json.loads(run("predict", *clips, "-m", model_path, "--json", "--topk", 2).stdout)
    assert [r["clip"] for r in by_ckpt] == [str(c) for c in clips]
    for a, b in zip(by_ckpt, by_onnx, strict=True):
        assert len(a["topk"]) == 5 and len(b["topk"]) == 2
        assert a["topk"][0]["label"] == b["topk"][0]["label"]
        assert a["topk"][0]["prob"] == pytest.approx(b["topk"][0]["prob"], abs=1e-4)
        assert sum(e["prob"] for e in a["topk"]) <= 1.0 + 1e-6
