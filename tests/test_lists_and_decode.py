import numpy as np
import pytest
from conftest import write_frames, write_video

from tsnctl.data.decode import count_folder_frames, count_video_frames, read_frame_folder, read_video
from tsnctl.data.lists import read_labels, read_list
from tsnctl.data.sampling import eval_indices
from tsnctl.errors import UserError


def test_frame_and_video_lists(tmp_path):
    (tmp_path / "train.txt").write_text("abseiling/a b.mp4 300 0\n\n# comment\nx/y 12 3\n")
    samples = read_list(tmp_path / "train.txt", "frames")
    assert [(s.name, s.num_frames, s.label) for s in samples] == [("abseiling/a b.mp4", 300, 0), ("x/y", 12, 3)]
    assert samples[0].path == tmp_path / "abseiling/a b.mp4"
    (tmp_path / "videos.txt").write_text("v/1.mp4 2\n")
    (video,) = read_list(tmp_path / "videos.txt", "video", root="/data")
    assert (str(video.path), video.label, video.num_frames) == ("/data/v/1.mp4", 2, None)


@pytest.mark.parametrize(("line", "fmt", "message"), [
    ("a 10", "frames", r"list.txt:2: expected '<frame_dir> <num_frames> <label>'"),
    ("a ten 1", "frames", r"list.txt:2: num_frames must be an integer, got 'ten'"),
    ("a 10 x", "frames", r"list.txt:2: label must be an integer"),
    ("a 0 1", "frames", r"list.txt:2: num_frames must be positive"),
    ("a.mp4 7", "video", r"list.txt:2: label 7 is out of range \(model has 5 classes\)"),
    ("a.mp4", "video", r"list.txt:2: expected '<path> <label>'"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, fmt, message):
    good = "ok 5 1\n" if fmt == "frames" else "ok.mp4 1\n"
    (tmp_path / "list.txt").write_text(good + line + "\n")
    with pytest.raises(UserError, match=message):
        read_list(tmp_path / "list.txt", fmt, num_classes=5)


def test_label_files(tmp_path):
    (tmp_path / "a.txt").write_text("0 abseiling\n1 air drumming\n")
    assert read_labels(tmp_path / "a.txt") == ["abseiling", "air drumming"]
    (tmp_path / "b.txt").write_text("cat\ndog\n")
    assert read_labels(tmp_path / "b.txt") == ["cat", "dog"]


def test_frame_folder_reading_uses_one_based_files(tmp_path):
    folder = write_frames(tmp_path / "clip", 10)
    assert count_folder_frames(folder) == 10
    frames = read_frame_folder(folder, [0, 9, 9])
    assert frames.shape == (3, 48, 64, 3)
    assert abs(int(frames[0, 0, -1, 0]) - 0) <= 2 and abs(int(frames[1, 0, -1, 0]) - 63) <= 2
    with pytest.raises(UserError, match=r"img_00011.jpg: frame file not found"):
        read_frame_folder(folder, [10])
    (folder / "img_00003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"img_00003.jpg: not a readable image"):
        read_frame_folder(folder, [2])


def test_video_decoding_seeks_to_the_sampled_frames(tmp_path):
    video = write_video(tmp_path / "v.mp4", 20)
    assert count_video_frames(video) == 20
    frames = read_video(video, lambda n: eval_indices(n, 4))  # 2, 7, 12, 17
    levels = frames.reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [16, 56, 96, 136], atol=4)


def test_bad_videos_are_one_line_errors(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello")
    for name in ("empty.mp4", "text.mp4"):
        with pytest.raises(UserError, match=name):
            read_video(tmp_path / name, lambda n: [0])
    with pytest.raises(UserError, match="video file not found"):
        read_video(tmp_path / "missing.mp4", lambda n: [0])


def test_reference_example_video(example_avi):
    assert count_video_frames(example_avi) == 131
    frames = read_video(example_avi, lambda n: eval_indices(n, 8))
    assert frames.shape == (8, 240, 320, 3)
