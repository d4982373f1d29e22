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
        "train.batch_size=6", "train.epochs=2", "train.lr_steps=[1]", "train.log_interval=1", "valid.batch_size=6",
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



def test_run_folder_has_steps_and_curves(trained):
    root, _ = trained
    run_dir = root / "run"
    metrics = {(r["epoch"], r["split"]): r for r in csv.DictReader(open(run_dir / "metrics.csv"))}
    steps = list(csv.DictReader(open(run_dir / "steps.csv")))
    # 18 training clips / batch 6 = 3 steps per epoch, one row per step (train.log_interval=1)
    assert [(r["epoch"], r["step"], r["steps"]) for r in steps[:6]] == [
        (str(e), str(s), "3") for e in (1, 2) for s in (1, 2, 3)]
    for epoch in ("1", "2"):  # the running mean at the last step is the epoch's mean
        last = [r for r in steps if r["epoch"] == epoch][-1]
        assert float(last["loss"]) == pytest.approx(float(metrics[(epoch, "train")]["loss"]), rel=1e-4)
    assert all(float(r["data_time"]) >= 0 and float(r["step_time"]) > 0 for r in steps)
    assert _png_size(run_dir / "curves.png") == (1200, 450)
    out = root / "overlay.png"
    result = run("plot", run_dir, "-o", out)
    assert str(out) in result.output and _png_size(out) == (1200, 450)


def test_test_command_writes_a_report(trained, tmp_path):
    root, args = trained
    scores = tmp_path / "scores.csv"
    result = run("test", "-w", root / "run" / "best.pt", *args, "--crop", "center", "--save-scores", scores,
                 "--report-dir", tmp_path / "report")
    assert "weakest classes" in result.output
    rows = list(csv.reader(open(scores)))[1:]
    logits = torch.tensor([[float(v) for v in r[2:]] for r in rows])
    labels = torch.tensor([int(r[1]) for r in rows])
    predicted = logits.argmax(1)
    per_class = list(csv.DictReader(open(tmp_path / "report" / "per_class.csv")))
    assert [r["class"] for r in per_class][:2] == ["bouncing_ball", "rotating_stripes"]
    for c, row in enumerate(per_class):
        assert int(row["support"]) == 2
        assert float(row["top1"]) == pytest.approx(100 * (predicted[labels == c] == c).float().mean().item())
    pairs = list(csv.DictReader(open(tmp_path / "report" / "confused_pairs.csv")))
    assert sum(int(p["count"]) for p in pairs) == int((predicted != labels).sum())
    assert [int(p["count"]) for p in pairs] == sorted((int(p["count"]) for p in pairs), reverse=True)
    width, height = _png_size(tmp_path / "report" / "confusion.png")
    assert width > 500 and height > 500
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["videos"] == 12
    assert (root / "run" / "test_val_videos_frames" / "per_class.csv").is_file()  # the default report folder


def test_predict_folder_to_csv_and_stream(trained, tmp_path):
    from conftest import write_video

    root, _ = trained
    videos = root / "data" / "videos" / "falling_rain"
    out = tmp_path / "predictions.csv"
    center = ["-o", "test.crop=center"]  # 3 views per prediction instead of 30: cheaper, same code path
    result = run("predict", videos, "-w", root / "run" / "best.pt", *center, "--output", out, "--topk", 2, "--json")
    clips = json.loads(result.stdout)
    assert [c["clip"] for c in clips] == [str(p) for p in sorted(videos.glob("*.mp4"))]
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["clip", "label_1", "index_1", "prob_1", "label_2", "index_2", "prob_2"]
    assert [(r["clip"], r["label_1"]) for r in rows] == [(c["clip"], c["topk"][0]["label"]) for c in clips]

    clip = write_video(tmp_path / "stream.mp4", 40)  # 10 fps
    saved = tmp_path / "annotated.mp4"
    result = run("predict", "--stream", clip, "-w", root / "run" / "best.pt", *center, "--stride", 8, "--window", 6,
                 "--topk", 3, "--json", "--save-video", saved, "--output", tmp_path / "stream.csv")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    # window full at frame 6, then every 8 frames until the file ends at frame 40
    assert [p["frame"] for p in lines] == [6, 14, 22, 30, 38]
    assert lines[1]["time"] == pytest.approx(1.4) and len(lines[0]["topk"]) == 3
    assert len(list(csv.DictReader(open(tmp_path / "stream.csv")))) == 5
    import cv2

    capture = cv2.VideoCapture(str(saved))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
    capture.release()
    text = run("predict", "--stream", clip, "-w", root / "run" / "best.pt", *center, "--stride", 100, "--window", 50)
    assert text.stdout.count("frame 40 (4.00s):") == 1  # shorter than the window: one prediction at the end


def _png_size(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
