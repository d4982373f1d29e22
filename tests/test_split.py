"""tsnctl split: stratified, group-preserving, deterministic train/val lists from DATA_DIR/<class>/<clip>."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import write_frames, write_video
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.data.lists import read_labels, read_list
from tsnctl.errors import UserError
from tsnctl.prepare.split import split_folder

runner = CliRunner()
GROUP = r"_(g\d+)_"


def fake_tree(root: Path, layout: dict[str, int]) -> Path:
    """Empty files named like videos (split never decodes videos): ``layout`` maps class -> clip count."""
    for cls, count in layout.items():
        (root / "videos" / cls).mkdir(parents=True)
        for i in range(count):
            (root / "videos" / cls / f"clip_{i:03d}.mp4").write_bytes(b"")
    return root / "videos"


def ucf_tree(root: Path, groups: dict[str, list[int]]) -> Path:
    """UCF101-style names v_<class>_gNN_cMM.avi: ``groups`` maps class -> clips per group."""
    for cls, sizes in groups.items():
        (root / "videos" / cls).mkdir(parents=True)
        for g, size in enumerate(sizes, start=1):
            for c in range(1, size + 1):
                (root / "videos" / cls / f"v_{cls}_g{g:02d}_c{c:02d}.avi").write_bytes(b"")
    return root / "videos"


def names(path: Path) -> list[str]:
    return [line.rsplit(" ", 1)[0] for line in path.read_text().splitlines()]


def test_each_class_sends_round_val_times_its_clips_to_val(tmp_path):
    data = fake_tree(tmp_path, {"zebra": 10, "apple": 7, "mid": 2, "big": 45})
    summary = split_folder(data, None, 0.2)
    assert summary.classes == ["apple", "big", "mid", "zebra"]  # sorted by folder name
    train = read_list(tmp_path / "train_videos.txt", "video", num_classes=4)
    val = read_list(tmp_path / "val_videos.txt", "video", num_classes=4)
    # round half up: 7 * 0.2 = 1.4 -> 1, 45 * 0.2 = 9, 2 * 0.2 = 0.4 -> at least 1, 10 * 0.2 = 2
    assert Counter(s.label for s in val) == {0: 1, 1: 9, 2: 1, 3: 2}
    assert Counter(s.label for s in train) == {0: 6, 1: 36, 2: 1, 3: 8}
    assert {s.name for s in train}.isdisjoint({s.name for s in val})
    assert all(s.path.is_file() for s in train + val)  # paths resolve against the lists' folder
    assert all(s.name.startswith(f"videos/{summary.classes[s.label]}/") for s in train + val)
    assert read_labels(tmp_path / "labels.txt") == ["apple", "big", "mid", "zebra"]
    assert (tmp_path / "labels.txt").read_text().splitlines()[0] == "0 apple"
    assert (summary.train, summary.val) == (51, 13)


def test_half_rounds_up_and_train_keeps_one_clip(tmp_path):
    data = fake_tree(tmp_path, {"a": 5, "b": 2})
    split_folder(data, None, 0.9)
    counts = Counter(s.label for s in read_list(tmp_path / "val_videos.txt", "video"))
    assert counts == {0: 4, 1: 1}  # 4.5 -> 5 is capped at 4: train keeps one clip
    fake_tree(tmp_path / "h", {"a": 5})
    split_folder(tmp_path / "h" / "videos", None, 0.5)
    assert len(names(tmp_path / "h" / "val_videos.txt")) == 3  # 2.5 -> 3 (Python's round() would give 2)


def test_groups_stay_on_one_side_and_val_fraction_is_by_clips(tmp_path):
    data = ucf_tree(tmp_path, {"Jump": [3, 4, 2, 5, 1, 3, 4, 2, 3, 4], "Run": [1, 2, 3, 4, 5, 6]})
    for seed in range(5):
        split_folder(data, None, 0.25, GROUP, seed, overwrite=True)
        train, val = names(tmp_path / "train_videos.txt"), names(tmp_path / "val_videos.txt")
        key = lambda n: (n.split("/")[1], re.search(GROUP, n).group(1))  # noqa: E731
        assert {key(n) for n in train}.isdisjoint({key(n) for n in val})
        for cls, total in (("Jump", 31), ("Run", 21)):
            got = sum(1 for n in val if n.split("/")[1] == cls)
            assert got >= 1 and abs(got - 0.25 * total) <= 3, (seed, cls, got)
        assert len(train) + len(val) == 52


def test_whole_match_names_the_group_without_a_capture_group(tmp_path):
    data = ucf_tree(tmp_path, {"Jump": [2, 2, 2, 2, 2]})
    split_folder(data, None, 0.4, r"g\d+", seed=3)
    val = names(tmp_path / "val_videos.txt")
    groups = {re.search(r"g\d+", n).group(0) for n in val}
    assert len(val) == 4 and len(groups) == 2


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    data = fake_tree(tmp_path, {"a": 30, "b": 30})
    split_folder(data, tmp_path / "s1", 0.2, seed=1)
    split_folder(data, tmp_path / "s1b", 0.2, seed=1)
    split_folder(data, tmp_path / "s2", 0.2, seed=2)
    assert (tmp_path / "s1" / "val_videos.txt").read_text() == (tmp_path / "s1b" / "val_videos.txt").read_text()
    assert (tmp_path / "s1" / "val_videos.txt").read_text() != (tmp_path / "s2" / "val_videos.txt").read_text()
    # paths are relative to the output folder
    assert names(tmp_path / "s1" / "val_videos.txt")[0].startswith("../videos/")


def test_adding_a_class_leaves_the_other_classes_split_alone(tmp_path):
    data = fake_tree(tmp_path, {"a": 20, "c": 20})
    split_folder(data, tmp_path / "before", 0.3, seed=4)
    (data / "b").mkdir()
    for i in range(5):
        (data / "b" / f"new_{i}.mp4").write_bytes(b"")
    split_folder(data, tmp_path / "after", 0.3, seed=4)
    before, after = names(tmp_path / "before" / "val_videos.txt"), names(tmp_path / "after" / "val_videos.txt")
    assert [n for n in after if "/b/" not in n] == before


def test_single_clip_class_goes_to_train_with_a_warning(tmp_path):
    data = fake_tree(tmp_path, {"a": 1, "b": 5})
    result = runner.invoke(app, ["split", str(data)])
    assert result.exit_code == 0, result.output
    assert "class 'a' has a single clip" in result.stderr
    assert names(tmp_path / "train_videos.txt").count("videos/a/clip_000.mp4") == 1
    assert Counter(s.label for s in read_list(tmp_path / "val_videos.txt", "video")) == {1: 1}


def test_a_name_with_one_inner_space_round_trips(tmp_path):
    data = fake_tree(tmp_path, {"Apply Eye": 3})
    (data / "Apply Eye" / "clip 9.mp4").write_bytes(b"")
    split_folder(data, None, 0.5)
    samples = read_list(tmp_path / "train_videos.txt", "video") + read_list(tmp_path / "val_videos.txt", "video")
    assert all(s.path.is_file() for s in samples) and len(samples) == 4
    assert read_labels(tmp_path / "labels.txt") == ["Apply Eye"]


def test_frame_folder_trees_give_frame_lists(tmp_path):
    for cls, count in (("a", 3), ("b", 2)):
        for i in range(count):
            write_frames(tmp_path / "frames" / cls / f"clip{i}", 3 + i, seed=i)
    summary = split_folder(tmp_path / "frames", None, 0.4)
    assert summary.kind == "frames"
    samples = read_list(tmp_path / "train_frames.txt", "frames") + read_list(tmp_path / "val_frames.txt", "frames")
    assert sorted((s.name, s.num_frames) for s in samples)[0] == ("frames/a/clip0", 3)
    assert len(samples) == 5 and not (tmp_path / "train_videos.txt").exists()


def test_mixed_trees_are_refused(tmp_path):
    data = fake_tree(tmp_path, {"a": 2, "b": 2})
    write_frames(data / "a" / "frames", 2)
    with pytest.raises(UserError, match="holds both video files and frame folders"):
        split_folder(data, None, 0.5)
    assert not list(tmp_path.glob("*.txt"))


def test_hidden_and_other_files_are_skipped(tmp_path):
    data = fake_tree(tmp_path, {"a": 2, "b": 2})
    (data / "a" / "notes.txt").touch()
    (data / "a" / ".DS_Store").touch()
    (data / ".cache").mkdir()
    summary = split_folder(data, None, 0.5)
    assert summary.classes == ["a", "b"] and summary.train + summary.val == 4
    assert len(summary.warnings) == 1 and "notes.txt" in summary.warnings[0]


def test_nothing_is_written_when_a_later_class_is_bad(tmp_path):
    data = fake_tree(tmp_path, {"a": 3, "b": 3})
    (data / "c").mkdir()
    with pytest.raises(UserError, match="class folder holds no clips"):
        split_folder(data, None, 0.3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]


def test_overwrite_replaces_and_a_symlinked_output_is_refused(tmp_path):
    data = fake_tree(tmp_path, {"a": 3})
    split_folder(data, None, 0.3)
    with pytest.raises(UserError, match="existing file"):
        split_folder(data, None, 0.3, seed=5)
    split_folder(data, None, 0.3, seed=5, overwrite=True)
    (tmp_path / "labels.txt").unlink()
    (tmp_path / "labels.txt").symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(UserError, match="symbolic link"):
        split_folder(data, None, 0.3, overwrite=True)
    assert not (tmp_path / "elsewhere.txt").exists()


def test_written_list_passes_check_and_extract(tmp_path):
    for cls in ("jump", "walk"):
        for i in range(3):
            write_video(tmp_path / "data" / "videos" / cls / f"v_{cls}_g{i:02d}_c01.mp4", 6)
    out = tmp_path / "lists"
    result = runner.invoke(app, ["split", str(tmp_path / "data" / "videos"), "--val", "0.34", "-o", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("train_videos.txt", "val_videos.txt"):
        checked = runner.invoke(app, ["check", str(out / name), "--format", "video", "-o", "model.num_classes=2",
                                      "--report", str(tmp_path / f"{name}.csv"), "--min-frames", "3"])
        assert checked.exit_code == 0, checked.output
        assert "usable clips in 2 classes" in checked.stdout
    extracted = runner.invoke(app, ["extract-frames", str(out / "val_videos.txt"), str(tmp_path / "frames"),
                                    "--workers", "1"])
    assert extracted.exit_code == 0, extracted.output
    frames = read_list(tmp_path / "frames" / "val_videos_frames.txt", "frames", num_classes=2)
    assert len(frames) == 2 and all(s.num_frames == 6 for s in frames)
