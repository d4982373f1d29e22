"""The examples in examples/ run as documented, on tiny data."""

import csv
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_video

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_python_api_example_runs_the_lifecycle(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["python_api.py", str(tmp_path), "--tiny"])
    runpy.run_path(str(ROOT / "examples" / "python_api.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "trained 1 epoch(s)" in out and "test top-1" in out and "val_000.mp4:" in out
    per_class = list(csv.DictReader(open(tmp_path / "run" / "test_report" / "per_class.csv")))
    assert len(per_class) == 6 and all(row["support"] == "1" for row in per_class)
    assert (tmp_path / "run" / "curves.png").is_file()


def test_custom_dataset_example_trains_on_class_folders(tmp_path):
    for split, count in (("train", 3), ("val", 1)):
        for cls in ("jump", "walk"):
            for i in range(count):
                write_video(tmp_path / "data" / split / cls / f"{cls}_{i}.mp4", 6 + i)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    tiny = ["-o", "model.pretrained=", "-o", "model.backbone=resnet18", "-o", "data.short_side=32",
            "-o", "data.crop_size=28", "-o", "data.num_workers=0", "-o", "train.epochs=1", "-o", "train.batch_size=2",
            "-o", "valid.batch_size=2", "-o", "test.num_seg=2", "-o", "test.crop=center"]
    result = subprocess.run(["bash", str(ROOT / "examples" / "custom_dataset.sh"), str(tmp_path / "data"),
                             str(tmp_path / "work"), *tiny], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "work" / "frames" / "train" / "labels.txt").read_text() == "0 jump\n1 walk\n"
    per_class = tmp_path / "work" / "run" / "test_frame_list" / "per_class.csv"
    assert [row["class"] for row in csv.DictReader(open(per_class))] == ["jump", "walk"]


def test_custom_dataset_example_splits_one_class_tree(tmp_path):
    for cls in ("jump", "walk"):
        for g in range(4):
            for c in range(2):
                write_video(tmp_path / "data" / cls / f"v_{cls}_g{g:02d}_c{c:02d}.mp4", 6)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "GROUP_BY": r"_(g\d+)_"}
    tiny = ["-o", "model.pretrained=", "-o", "model.backbone=resnet18", "-o", "data.short_side=32",
            "-o", "data.crop_size=28", "-o", "data.num_workers=0", "-o", "train.epochs=1", "-o", "train.batch_size=2",
            "-o", "valid.batch_size=2", "-o", "test.num_seg=2", "-o", "test.crop=center"]
    result = subprocess.run(["bash", str(ROOT / "examples" / "custom_dataset.sh"), str(tmp_path / "data"),
                             str(tmp_path / "work"), *tiny], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    val = (tmp_path / "work" / "lists" / "val_videos.txt").read_text().splitlines()
    assert len(val) == 4 and len({line.split("_")[-2] + line[-1] for line in val}) == 2  # one group per class
    per_class = tmp_path / "work" / "run" / "test_val_videos_frames" / "per_class.csv"
    assert [row["class"] for row in csv.DictReader(open(per_class))] == ["jump", "walk"]


def test_quickstart_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "examples" / "quickstart.sh")], check=True)
