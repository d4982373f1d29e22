"""Progress lines, run-folder plots, test reports, streams, docs in sync, colour and exit conventions."""

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_frames, write_video
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.data.dataset import ClipSettings
from tsnctl.deploy.predict import Predictor, expand_clips
from tsnctl.engine import evaluate
from tsnctl.errors import UserError
from tsnctl.progress import LogProgress

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_log_progress_prints_rate_and_eta_at_most_every_interval(caplog):
    now = [0.0]
    progress = LogProgress(every=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="tsnctl"):
        for step in range(1, 101):
            now[0] = step * 0.5  # 2 steps per second
            progress("train 1/3", step, 100, f"loss {1 / step:.2f}")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5  # at 10 s, 20 s, 30 s, 40 s and the completion at 50 s
    assert lines[0] == "train 1/3: 21/100 (21%) 2.00 it/s, eta 0:00:40 | loss 0.05"
    assert lines[-1].startswith("train 1/3: 100/100 (100%) done in 0:00:50")


def write_metrics(run_dir: Path, epochs: int, offset: float = 0.0) -> Path:
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "split", "loss", "top1", "top5", "lr"])
        for e in range(1, epochs + 1):
            writer.writerow([e, "train", 2.0 / e + offset, 20 * e, 40 * e, 0.01])
            writer.writerow([e, "valid", 2.2 / e + offset, 18 * e, 38 * e, 0.01])
    return run_dir


def test_plot_overlays_runs_and_rejects_a_folder_without_metrics(tmp_path):
    a, b = write_metrics(tmp_path / "a", 3), write_metrics(tmp_path / "b", 2, 0.1)
    out = tmp_path / "both.png"
    result = runner.invoke(app, ["plot", str(a), str(b), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert png_size(out) == (1200, 450)
    result = runner.invoke(app, ["plot", str(a)])
    assert result.exit_code == 0 and png_size(a / "curves.png") == (1200, 450)
    result = runner.invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 2 and "no metrics.csv" in result.output and "Traceback" not in result.output


def test_report_counts_pairs_and_sorts_the_matrix(tmp_path):
    from tsnctl.engine.reports import class_order, write_report

    # 3 classes; class 0: 2 right; class 1: 1 right, 2 taken for class 2; class 2: none in the test set
    predicted = [0, 0, 1, 2, 2]
    labels = torch.tensor([0, 0, 1, 1, 1])
    logits = torch.nn.functional.one_hot(torch.tensor(predicted), 3).float()
    result = evaluate.TestResult(60.0, 100.0, 66.7, 5, "test", logits, labels, [f"v{i}" for i in range(5)])
    report = write_report(result, ["run", "walk", "jump"], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "per_class.csv")))
    assert [(r["class"], r["support"], r["top1"], r["most_confused_with"]) for r in rows] == [
        ("run", "2", "100.00", ""), ("walk", "3", "33.33", "jump"), ("jump", "0", "nan", "")]
    pairs = list(csv.DictReader(open(tmp_path / "confused_pairs.csv")))
    assert [(p["true_class"], p["predicted_class"], p["count"], p["share"]) for p in pairs] == [
        ("walk", "jump", "2", "66.67")]
    assert class_order(report) == [1, 0, 2]  # worst first, classes without videos last
    assert json.loads((tmp_path / "metrics.json").read_text())["top1"] == 60.0
    assert png_size(tmp_path / "confusion.png")[0] >= 600


def test_confusion_png_for_400_classes_is_large_enough_to_read(tmp_path):
    from tsnctl.engine.reports import write_report

    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 400, 2000))
    logits = torch.from_numpy(rng.normal(size=(2000, 400))).float()
    logits[torch.arange(2000), labels] += 2.5
    result = evaluate.TestResult(0, 0, 0, 2000, "test", logits, labels, [""] * 2000)
    report = write_report(result, [f"class_{i}" for i in range(400)], tmp_path)
    assert len(report.classes) == 400 and png_size(tmp_path / "confusion.png")[0] >= 3000
    assert report.pairs[0].count >= report.pairs[-1].count


def test_expand_clips_keeps_frame_folders_and_lists_videos(tmp_path):
    write_frames(tmp_path / "frames" / "clip_a", 3)
    write_video(tmp_path / "videos" / "b" / "two.mp4", 4)
    write_video(tmp_path / "videos" / "a" / "one.avi", 4)
    (tmp_path / "videos" / "notes.txt").write_text("not a video")
    clips = expand_clips([tmp_path / "frames" / "clip_a", tmp_path / "videos"])
    assert clips == [str(tmp_path / "frames" / "clip_a"), str(tmp_path / "videos" / "a" / "one.avi"),
                     str(tmp_path / "videos" / "b" / "two.mp4")]
    (tmp_path / "videos" / "list.txt").write_text("a/one.avi 0\n\n# a comment\nb/two.mp4\n")
    assert expand_clips([tmp_path / "videos" / "list.txt"]) == clips[1:]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a frame folder"):
        expand_clips([tmp_path / "empty"])


def test_stream_samples_centred_segments_of_the_window(tmp_path):
    from tsnctl.deploy.stream import stream_predict

    seen = []

    def run(clips: torch.Tensor) -> np.ndarray:
        seen.append(clips.shape)
        return np.array([[0.0, 1.0, 2.0]])

    predictor = Predictor(run, ClipSettings("video", 2, 32, 24, crop="three"), ["a", "b", "c"])
    video = write_video(tmp_path / "v.mp4", 25)
    predictions = list(stream_predict(predictor, str(video), window=5, stride=10, topk=2))
    assert [(p.frame, p.time) for p in predictions] == [(5, 0.5), (15, 1.5), (25, 2.5)]
    assert seen == [(1, 2 * 3, 3, 24, 24)] * 3  # 2 segments x ThreeCrop
    assert [e["label"] for e in predictions[0].topk] == ["c", "b"]
    with pytest.raises(UserError, match="no such video file"):
        list(stream_predict(predictor, str(tmp_path / "none.mp4"), 5, 10))


def test_stream_and_clips_together_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["predict", "x.mp4", "--stream", "0", "-m", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "not both" in result.output


def test_docs_command_pages_and_config_reference_match_the_code():
    from tsnctl.cli import docgen

    stale = docgen.stale_files(Path(__file__).resolve().parents[1] / "docs")
    assert not stale, f"out of date: {stale}; run: python -m tsnctl.cli.docgen"


def test_config_reference_describes_every_field():
    import dataclasses

    from tsnctl import config
    from tsnctl.cli import docgen

    for section in dataclasses.fields(config.Config):
        cls = getattr(config, section.type) if isinstance(section.type, str) else section.type
        for name, comment in docgen.field_comments(cls).items():
            assert comment, f"{section.name}.{name} needs a trailing # comment in tsnctl/config.py"


def test_no_color_is_respected():
    code = "from tsnctl.cli import main; main()"
    args = [sys.executable, "-c", code, "plot", "missing_run"]
    env = {**os.environ, "FORCE_COLOR": "1", "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    coloured = subprocess.run(args, env=env, capture_output=True, text=True)
    plain = subprocess.run(args, env={**env, "NO_COLOR": "1"}, capture_output=True, text=True)
    assert coloured.returncode == plain.returncode == 2
    assert "\x1b[1;31m" in coloured.stderr  # bold red "error:" when colour is allowed
    assert "missing_run: no metrics.csv" in plain.stderr
    assert "\x1b[1;31m" not in plain.stderr and "31m" not in plain.stderr


def test_tensorboard_missing_is_said_once(tmp_path, caplog, monkeypatch):
    import builtins

    from tsnctl.engine.runlog import IntervalStats, RunLog

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with caplog.at_level(logging.INFO, logger="tsnctl"):
        run_log = RunLog(tmp_path)
        run_log.interval(IntervalStats(1, 1, 2, 1.5, 50.0, 100.0, 0.01, 0.1, 0.2))
        run_log.close()
    assert [r.getMessage() for r in caplog.records if "tensorboard" in r.getMessage()] == [
        "tensorboard is not installed: no event files (pip install tensorboard to get them)"]
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "steps.csv").read_text().splitlines()[1] == "1,1,2,1.5,50,100,0.01,0.1,0.2"


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tsnctl.engine.runlog import IntervalStats, RunLog

    write_metrics(tmp_path / "run", 1)
    run_log = RunLog(tmp_path / "run")
    run_log.interval(IntervalStats(1, 1, 2, 1.5, 50.0, 100.0, 0.01, 0.1, 0.2))
    run_log.end_epoch(1)
    run_log.close()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert png_size(tmp_path / "run" / "curves.png") == (1200, 450)


def test_relative_links_in_docs_point_to_files():
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: broken link {target}"


def test_unwritable_report_folder_is_one_line_error(tmp_path):
    from tsnctl.engine.reports import write_report

    (tmp_path / "taken").write_text("a file where the folder should go")
    logits, labels = torch.eye(2), torch.tensor([0, 1])
    result = evaluate.TestResult(100.0, 100.0, 100.0, 2, "test", logits, labels, ["a", "b"])
    with pytest.raises(UserError, match="cannot write the test report") as error:
        write_report(result, ["x", "y"], tmp_path / "taken" / "report")
    assert error.value.exit_code == 1


def test_every_command_and_option_has_help():
    from typer.main import get_command

    for name, command in get_command(app).commands.items():
        assert command.help, f"{name} has no description"
        for param in command.params:
            assert getattr(param, "help", None), f"{name} {param.opts} has no help"
