"""Video lists with time ranges: ``<path> <label> <start_s> <end_s>`` trimmed when reading and in extract-frames."""

from pathlib import Path

import numpy as np
import pytest
from conftest import write_video

from tsnctl.data.dataset import read_clip_frames
from tsnctl.data.lists import parse_line, read_list
from tsnctl.errors import UserError
from tsnctl.prepare.extract import extract_frames


def test_lines_with_and_without_a_range():
    ranged = parse_line("my clips/a b.mp4 2 1.5 3", "video", Path("/d"), "l:1", 5)
    assert (ranged.name, ranged.label, ranged.window) == ("my clips/a b.mp4", 2, (1.5, 3.0))
    plain = parse_line("my clips/a b.mp4 2", "video", Path("/d"), "l:1", 5)
    assert (plain.name, plain.label, plain.window) == ("my clips/a b.mp4", 2, None)
    assert parse_line("clip 7.mp4 1", "video", Path("/d"), "l:1", 5).name == "clip 7.mp4"
    with pytest.raises(UserError, match="l:3: time range 4 to 2 s"):
        parse_line("clip.mp4 1 4 2", "video", Path("/d"), "l:3", 5)
    with pytest.raises(UserError, match="l:4: label 9 is out of range"):
        parse_line("clip.mp4 9 0 1", "video", Path("/d"), "l:4", 5)
    frames = parse_line("clip 3 1", "frames", Path("/d"), "l:5", 5)  # frame lists have no ranges
    assert (frames.name, frames.num_frames, frames.window) == ("clip", 3, None)


def _grey(frames: np.ndarray) -> list[int]:
    return [round(float(f.mean()) / 8) for f in frames]  # frame i of write_video is grey 8*i


def test_the_video_path_reads_only_the_range(tmp_path):
    write_video(tmp_path / "v.mp4", 30)  # 10 fps: frame i is shown from i/10 s
    (tmp_path / "list.txt").write_text("v.mp4 0 1.0 2.05\nv.mp4 1\n")
    ranged, whole = read_list(tmp_path / "list.txt", "video")
    seen: list[int] = []

    def every(n: int) -> list[int]:
        seen.append(n)
        return list(range(n))

    assert _grey(read_clip_frames(ranged, "video", every)) == list(range(10, 21))  # 1.0 <= i/10 < 2.05
    assert seen == [11] and len(read_clip_frames(whole, "video", every)) == 30
    far = read_list(tmp_path / "list.txt", "video")[0].__class__(
        "v.mp4", tmp_path / "v.mp4", 0, None, 5.0, 9.0)
    with pytest.raises(UserError, match="holds no frame .*30 frames at 10 fps"):
        read_clip_frames(far, "video", every)


def test_extract_frames_writes_each_range_as_its_own_clip(tmp_path):
    write_video(tmp_path / "videos" / "v.mp4", 30)
    (tmp_path / "list.txt").write_text("videos/v.mp4 0 0 0.5\nvideos/v.mp4 1 2.0 2.95\nvideos/v.mp4 2\n")
    summary = extract_frames(tmp_path / "list.txt", tmp_path / "frames")
    lines = summary.list_file.read_text().splitlines()
    assert lines == ["videos/v.mp4_0-0.5s 5 0", "videos/v.mp4_2-2.95s 10 1", "videos/v.mp4 30 2"]
    whole = tmp_path / "frames" / "videos" / "v.mp4"
    part = tmp_path / "frames" / "videos" / "v.mp4_2-2.95s"
    for k in range(1, 11):  # the range's frame k is the video's frame 20 + k, byte for byte
        assert (part / f"img_{k:05d}.jpg").read_bytes() == (whole / f"img_{20 + k:05d}.jpg").read_bytes()
    assert not (part / "img_00011.jpg").exists()
    again = extract_frames(tmp_path / "list.txt", tmp_path / "frames")
    assert again.skipped == 3  # finished ranges are recognised like whole videos


def test_dry_run_counts_the_frames_of_each_range(tmp_path):
    from tsnctl.prepare.estimate import estimate_extraction

    write_video(tmp_path / "videos" / "v.mp4", 30)
    (tmp_path / "list.txt").write_text("videos/v.mp4 0 0 0.5\nvideos/v.mp4 1 2.0 2.95\n")
    estimate = estimate_extraction(tmp_path / "list.txt")
    assert (estimate.videos, estimate.frames) == (2, 15)
