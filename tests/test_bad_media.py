"""Every reader meets broken and awkward media: each clip either works or fails with one line naming it,
and the good clips of the same run are still processed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from badmedia import frame_folder_cases, media_cases
from conftest import write_frames, write_video
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.config import Config
from tsnctl.data.dataset import BadClip, ClipDataset, ClipSettings
from tsnctl.data.decode import read_video
from tsnctl.data.lists import read_list
from tsnctl.data.sampling import eval_indices
from tsnctl.errors import UserError
from tsnctl.models.tsn import TSN
from tsnctl.weights.checkpoint import save_checkpoint

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(map(str, args)))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> tuple[Path, dict[str, tuple[Path, str]]]:
    """All generated cases under one folder, and a video list naming each of them (label 0 or 1)."""
    root = tmp_path_factory.mktemp("media")
    cases = {name: (make(root), expected) for name, (make, expected) in media_cases().items()}
    (root / "videos.txt").write_text("".join(f"{path.name} {i % 2}\n" for i, (path, _) in
                                             enumerate(cases.values())))
    return root, cases


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained 2-class ResNet-18 TSN with a small test protocol (2 segments, CenterCrop)."""
    cfg = Config()
    cfg.data.short_side, cfg.data.crop_size, cfg.data.num_workers = 40, 32, 0
    cfg.model.backbone, cfg.model.num_classes, cfg.model.pretrained = "resnet18", 2, ""
    cfg.test.num_seg, cfg.test.crop = 2, "center"
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.manual_seed(0)
    model = TSN("resnet18", 2, 0.0, 0.01)
    save_checkpoint(path, {"model": model.state_dict(), "epoch": 1, "config": cfg.to_dict(),
                           "class_names": ["a", "b"]})
    return path


def assert_fails_naming(message: str, path: Path, fragment: str) -> None:
    assert str(path) in message and fragment in message and "\n" not in message.strip(), message


@pytest.mark.parametrize("case", list(media_cases()))
def test_video_decoder(media, case):
    _, cases = media
    path, expected = cases[case]
    if expected == "ok":
        frames = read_video(path, lambda n: eval_indices(n, 3))
        assert frames.shape[0] == 3 and frames.shape[-1] == 3 and frames.dtype.name == "uint8"
        if case == "rotated":  # written 64 wide, 48 high, with a 90 degree display rotation
            assert frames.shape[1:3] == (64, 48)
        if case == "grayscale":
            assert (frames[..., 0] == frames[..., 1]).all()
    else:
        with pytest.raises(UserError) as err:
            read_video(path, lambda n: eval_indices(n, 3))
        assert_fails_naming(str(err.value), path, expected)



def test_frame_folder_decoder(tmp_path):
    cases = frame_folder_cases(tmp_path)
    settings = ClipSettings("frames", 6, 40, 32, crop="center")
    samples = [read_list_sample(path, 6) for path, _ in cases.values()]
    items = [ClipDataset(samples, settings)[i] for i in range(3)]
    assert items[0][0].shape == (6, 3, 32, 32)
    for item, (path, fragment) in zip(items[1:], list(cases.values())[1:], strict=True):
        assert isinstance(item, BadClip)
        assert_fails_naming(item.reason, path, fragment)


def read_list_sample(path: Path, frames: int):
    from tsnctl.data.lists import Sample

    return Sample(path.name, path, 0, frames)


def test_dataset_marks_bad_clips_and_batches_drop_them(media):
    root, cases = media
    samples = read_list(root / "videos.txt", "video")
    dataset = ClipDataset(samples, ClipSettings("video", 2, 40, 32, mode="train"))
    items = [dataset[i] for i in range(len(samples))]
    bad = {item.name for item in items if isinstance(item, BadClip)}
    assert bad == {path.name for path, expected in cases.values() if expected != "ok"}
    clips, labels, dropped = dataset.load_batch(list(range(len(samples))))
    assert clips.shape == (len(items) - len(bad), 2, 3, 32, 32) and len(labels) == clips.shape[0]
    assert {clip.name for clip in dropped} == bad
    good = [item for item in items if not isinstance(item, BadClip)]
    assert all(torch.equal(clip, item[0]) for clip, item in zip(clips, good, strict=True))


def test_extract_frames_handles_every_case(media, tmp_path):
    root, cases = media
    result = run("extract-frames", root / "videos.txt", tmp_path / "out", "--workers", 1)
    assert result.exit_code == 1 and "Traceback" not in result.output
    bad = [path for path, expected in cases.values() if expected != "ok"]
    assert f"{len(bad)} of {len(cases)} videos could not be extracted" in result.output
    for path in bad:
        assert str(path) in result.output
    report = {row["path"]: row for row in csv.DictReader(open(tmp_path / "out" / "videos_extract_report.csv"))}
    listed = (tmp_path / "out" / "videos_frames.txt").read_text().splitlines()
    for path, expected in cases.values():
        status = report[path.name]["status"]
        assert status == ("extracted" if expected == "ok" else "failed"), path.name
        if expected == "ok":
            frames = int(report[path.name]["frames"])
            assert frames >= 1 and len(list((tmp_path / "out" / path.name).glob("img_*.jpg"))) == frames
            assert any(line.startswith(f"{path.name} {frames} ") for line in listed)
    assert report["one.mp4"]["frames"] == "1" and report["two.mp4"]["frames"] == "2"
    assert not list((tmp_path / "out").glob("*.part"))


def test_check_video_list(media, tmp_path):
    root, cases = media
    listing = root / "videos.txt"
    extra = tmp_path / "more.txt"
    extra.write_text(listing.read_text() + "clip.avi 1\nnot_there.mp4 0\nclip.webm 7\n")
    report = tmp_path / "report.csv"
    result = run("check", extra, "--format", "video", "--root", root, "-o", "model.num_classes=2",
                 "--report", report, "--workers", 2)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    rows = {int(r["line"]): r for r in csv.DictReader(open(report))}
    names = [path.name for path, _ in cases.values()]
    by_name = {rows[i + 1]["path"]: rows[i + 1] for i in range(len(names))}
    for path, expected in cases.values():
        status, frames = by_name[path.name]["status"], by_name[path.name]["frames"]
        if expected == "ok":  # clips with fewer frames than train.num_seg (3) are too short
            assert status == ("too_short" if int(frames) < 3 else "ok"), (path.name, status)
        else:
            assert status == "unreadable", (path.name, status)
    assert by_name["one.mp4"]["status"] == by_name["two.mp4"]["status"] == "too_short"
    n = len(names)
    first = names.index("clip.avi") + 1
    assert rows[n + 1]["status"] == "duplicate" and f"repeats line {first}" in rows[n + 1]["reason"]
    assert rows[n + 2]["status"] == "missing" and "not_there.mp4" in rows[n + 2]["reason"]
    assert rows[n + 3]["status"] == "bad_line" and "label 7 is out of range" in rows[n + 3]["reason"]
    problems = sum(r["status"] != "ok" for r in rows.values())
    assert f"{problems} of {n + 3} lines have problems" in result.output


def test_check_frame_list_and_clean_list(tmp_path):
    cases = frame_folder_cases(tmp_path / "frames")
    (tmp_path / "frames.txt").write_text("good 6 0\nmissing 6 1\ncorrupt 6 1\ngood2 6 1\n")
    write_frames(tmp_path / "frames" / "good2", 6)
    (tmp_path / "frames" / "frames.txt").write_text((tmp_path / "frames.txt").read_text())
    report = tmp_path / "r.csv"
    result = run("check", tmp_path / "frames" / "frames.txt", "-o", "model.num_classes=3", "--report", report)
    assert result.exit_code == 1, result.output
    rows = list(csv.DictReader(open(report)))
    assert [r["status"] for r in rows] == ["ok", "missing", "unreadable", "ok"]
    assert "img_00003.jpg" in rows[1]["reason"] and "img_00002.jpg" in rows[2]["reason"]
    assert cases["good"][1] == "ok" and "class" in result.output and "2: 0" not in result.output
    assert "1 of 3 classes have no usable clip: 2" in result.output.replace("\n", " ")

    (tmp_path / "frames" / "clean.txt").write_text("good 6 0\ngood2 6 1\n")
    clean = run("check", tmp_path / "frames" / "clean.txt", "-o", "model.num_classes=2", "--report", report)
    assert clean.exit_code == 0, clean.output
    assert "2 usable clips in 2 classes (0: 1, 1: 1)" in clean.output


def test_predict_classifies_good_clips_and_names_bad_ones(media, checkpoint, tmp_path):
    root, cases = media
    folders = frame_folder_cases(tmp_path)
    clips = [path for path, _ in cases.values()] + [path for path, _ in folders.values()]
    result = run("predict", *clips, "-w", checkpoint, "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    entries = {entry["clip"]: entry for entry in json.loads(result.stdout)}
    expected = {**{str(p): e for p, e in cases.values()}, **{str(p): e for p, e in folders.values()}}
    assert set(entries) == set(expected)
    for clip, outcome in expected.items():
        if outcome == "ok":
            assert len(entries[clip]["topk"]) == 2 and "error" not in entries[clip], entries[clip]
        else:
            assert_fails_naming(entries[clip]["error"], Path(clip), outcome)
    bad = sum(outcome != "ok" for outcome in expected.values())
    assert f"{bad} of {len(expected)} clips could not be read" in result.stderr


def test_test_excludes_bad_videos_and_never_substitutes(checkpoint, tmp_path):
    for i in range(4):
        write_video(tmp_path / f"v{i}.mp4", 6)
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "test.txt").write_text("v0.mp4 0\nbroken.mp4 1\nv1.mp4 1\nv2.mp4 0\nv3.mp4 1\n")
    scores, metrics = tmp_path / "scores.csv", tmp_path / "m.json"
    args = ["test", "-w", checkpoint, "--list", tmp_path / "test.txt", "-o", "data.format=video",
            "--save-scores", scores, "--metrics-json", metrics]
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "broken.mp4" in result.output and "4 of 5 videos (1 unreadable, excluded)" in result.output
    assert [row[0] for row in csv.reader(open(scores))][1:] == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    m = json.loads(metrics.read_text())
    assert m["videos"] == 4 and m["listed"] == 5 and m["excluded"][0]["path"] == "broken.mp4"
    assert run(*args, "--allow-missing").exit_code == 0


def test_training_skips_counts_and_lists_bad_clips(tmp_path):
    lines = []
    for i in range(8):
        write_frames(tmp_path / f"c{i}", 4, seed=i)
        lines.append(f"c{i} 4 {i % 2}\n")
    (tmp_path / "c5" / "img_00002.jpg").write_bytes(b"garbage")
    (tmp_path / "train.txt").write_text("".join(lines))
    overrides = [f"data.train_list={tmp_path / 'train.txt'}", "data.short_side=40", "data.crop_size=32",
                 "data.num_workers=0", "model.backbone=resnet18", "model.num_classes=2", "train.num_seg=4",
                 "train.batch_size=4", "train.epochs=1"]
    args = ["train", *[x for o in overrides for x in ("-o", o)]]
    result = run(*args, "--output", tmp_path / "run", "--max-bad-fraction", 0.2)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "run" / "bad_samples.csv")))
    assert [(r["split"], r["index"], r["path"]) for r in rows] == [("train", "5", "c5")]
    assert "img_00002.jpg" in rows[0]["reason"]

    stopped = run(*args, "--output", tmp_path / "strict")  # default train.max_bad_fraction = 0.01
    assert stopped.exit_code == 1 and "Traceback" not in stopped.output
    assert "1 of 8 training clips could not be read" in stopped.output.replace("\n", " ")
    assert (tmp_path / "strict" / "bad_samples.csv").is_file()
