"""``predict --timeline``: windows scored as ``test`` scores a clip, segments merged and timed, memory flat."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_tiny_checkpoint
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.data.dataset import ClipSettings
from tsnctl.data.presets import eval_preset
from tsnctl.data.sampling import eval_indices
from tsnctl.data.video import read_video
from tsnctl.deploy.predict import Predictor, torch_predictor
from tsnctl.deploy.timeline import Span, WindowScore, merge_segments, parse_span, score_windows, smooth_probs
from tsnctl.deploy.timeline_out import predict_timeline
from tsnctl.errors import UserError
from tsnctl.models.tsn import TSN

COLOURS = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}  # BGR
FPS = 10


def concatenated(path: Path, seconds: list[tuple[str, float]], size: tuple[int, int] = (64, 48)) -> Path:
    """One video made of solid-colour clips back to back (``[(colour, seconds), ...]``) at FPS."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
    for colour, length in seconds:
        for _ in range(round(length * FPS)):
            writer.write(np.full((size[1], size[0], 3), COLOURS[colour], np.uint8))
    writer.release()
    return path


def colour_predictor(num_seg: int = 4) -> Predictor:
    """A stand-in model whose logits are the views' mean red, green and blue: a window's class is the colour
    most of its sampled frames show, so the right segments are known exactly."""
    def run(clips: torch.Tensor) -> np.ndarray:
        return (clips.double().mean(dim=(1, 3, 4)) / 255 * 20).numpy()

    return Predictor(run, ClipSettings("video", num_seg, 48, 40), list(COLOURS))


def test_segments_of_concatenated_clips_are_found_at_the_right_times(tmp_path):
    video = concatenated(tmp_path / "long.mp4", [("red", 4), ("green", 3), ("blue", 5)])
    result = predict_timeline(colour_predictor(), str(video), tmp_path / "out", parse_span("1s", "--window"),
                              parse_span("0.5s", "--stride"))
    assert (result.window, result.stride, result.frames) == (10, 5, 120)
    assert [s.label for s in result.segments] == ["red", "green", "blue"]
    stride = 0.5
    for seg, (start, end) in zip(result.segments, [(0, 4), (4, 7), (7, 12)], strict=True):
        assert abs(seg.start - start) <= stride and abs(seg.end - end) <= stride, seg
        assert seg.score > 0.6  # mixed windows at the changes lower the mean
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {"windows.csv", "segments.csv", "segments.srt", "timeline.png", "timeline.json"}
    rows = (tmp_path / "out" / "segments.csv").read_text().splitlines()
    assert rows[0] == "start,end,label,score" and rows[1].split(",")[2] == "red"
    assert "00:00:00,000 --> 00:00:0" in (tmp_path / "out" / "segments.srt").read_text()
    summary = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert len(summary["windows"]) == 23 and summary["segments"][1]["label"] == "green"
    assert (tmp_path / "out" / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_annotated_video_has_every_frame(tmp_path):
    video = concatenated(tmp_path / "long.mp4", [("red", 1.5), ("blue", 1.5)])
    predict_timeline(colour_predictor(), str(video), tmp_path / "out", Span(10, False), Span(5, False),
                     save_video=tmp_path / "annotated.mp4")
    capture = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    capture.release()
    assert not list(tmp_path.glob("*.tmp*"))


def test_each_window_is_scored_as_test_scores_its_frames(tmp_path):
    """A real (random) TSN: window probabilities equal the test protocol on exactly the window's frames."""
    video = concatenated(tmp_path / "long.mp4", [("red", 1), ("green", 1.3)])
    torch.manual_seed(0)
    settings = ClipSettings("video", 3, 40, 32, crop="three")
    predictor = torch_predictor(TSN("resnet18", 3), settings, list(COLOURS), torch.device("cpu"), "eager")
    frames = iter(read_video(video, lambda n: list(range(n))))
    windows = list(score_windows(predictor, frames, 8, 3))
    assert [(w.start, w.end) for w in windows] == [(s, s + 8) for s in range(0, 16, 3)]
    for w in windows:
        clip = read_video(video, lambda n, w=w: [w.start + i for i in eval_indices(w.end - w.start, 3)])
        logits = predictor.run(eval_preset(clip, 40, 32, "three")[None])[0]
        expected = torch.softmax(torch.from_numpy(logits).double(), 0).numpy()
        np.testing.assert_allclose(w.probs, expected, rtol=1e-6, atol=1e-9)


def test_short_video_is_one_window(tmp_path):
    video = concatenated(tmp_path / "short.mp4", [("green", 0.6)])
    result = predict_timeline(colour_predictor(), str(video), tmp_path / "out", parse_span("2s", "--window"),
                              parse_span("0.5s", "--stride"))
    assert [(w.start, w.end) for w in result.windows] == [(0, 6)]
    assert [(s.start, s.end, s.label) for s in result.segments] == [(0.0, 0.6, "green")]


def test_memory_stays_flat_on_a_long_source():
    """Frames nobody samples any more are let go: at most about one window of frames is alive at a time."""
    alive: list[weakref.ref] = []
    peak = 0

    def frames():
        nonlocal peak
        for i in range(3000):
            frame = np.full((48, 64, 3), i % 256, np.uint8)  # short side 48 = the model's: kept as is, not copied
            alive.append(weakref.ref(frame))
            yield frame
            del frame
            gc.collect(0) if i % 500 == 0 else None
            peak = max(peak, sum(r() is not None for r in alive[-200:]))

    windows = list(score_windows(colour_predictor(num_seg=4), frames(), 50, 10))
    assert len(windows) == (3000 - 50) // 10 + 1
    assert peak <= 50 + 1


def _windows(labels: list[int], classes: int = 3, prob: float = 0.9, window: int = 10, stride: int = 5
             ) -> list[WindowScore]:
    out = []
    for i, c in enumerate(labels):
        probs = np.full(classes, (1 - prob) / (classes - 1))
        probs[c] = prob
        out.append(WindowScore(i * stride, i * stride + window, probs))
    return out


def test_merge_times_follow_window_centres():
    # windows of 10 frames every 5 at 10 fps: centres 0.5, 1.0, 1.5, ... s; the video lasts 4 s
    segments = merge_segments(_windows([0, 0, 0, 1, 1, 2, 2]), 10.0, 4.0, ["a", "b", "c"])
    assert [(s.start, s.end, s.label) for s in segments] == [(0.0, 1.75, "a"), (1.75, 2.75, "b"), (2.75, 4.0, "c")]
    assert all(abs(s.score - 0.9) < 1e-9 for s in segments)


def test_smoothing_removes_a_one_window_blip_and_threshold_drops_weak_segments():
    labels = [0, 0, 0, 0, 1, 0, 0, 0, 2, 2, 2, 2]
    assert [s.label for s in merge_segments(_windows(labels), 10.0, 7.0, ["a", "b", "c"])] == ["a", "b", "a", "c"]
    assert [s.label for s in merge_segments(_windows(labels), 10.0, 7.0, ["a", "b", "c"], smooth=3)] == ["a", "c"]
    weak = _windows([0, 0, 1, 1]) + _windows([2, 2], prob=0.5)
    weak[4:] = [WindowScore(20 + 5 * i, 30 + 5 * i, w.probs) for i, w in enumerate(weak[4:])]
    assert [s.label for s in merge_segments(weak, 10.0, 4.0, ["a", "b", "c"], threshold=0.6)] == ["a", "b"]
    np.testing.assert_allclose(smooth_probs(np.eye(3), 3), [[0.5, 0.5, 0], [1 / 3] * 3, [0, 0.5, 0.5]])


@pytest.mark.parametrize("text", ["0s", "abc", "-1", "1.5", "0", "2 s s", "nan", ""])
def test_bad_spans(text):
    with pytest.raises(UserError, match="--window"):
        parse_span(text, "--window")


def test_spans():
    assert parse_span("2s", "--window").frames(25) == 50
    assert parse_span("500ms", "--window").frames(30) == 15
    assert parse_span("16", "--window").frames(30) == 16
    assert parse_span("0.001s", "--window").frames(10) == 1


def test_cli_timeline(tmp_path):
    video = concatenated(tmp_path / "long.mp4", [("red", 2), ("blue", 2)])
    write_tiny_checkpoint(tmp_path / "m.pt", 2, "center", list(COLOURS), device="auto")
    result = CliRunner().invoke(app, ["predict", str(video), "-w", str(tmp_path / "m.pt"), "--timeline",
                                      "--window", "1s", "--stride", "5", "--smooth", "3", "--output",
                                      str(tmp_path / "tl"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["window"], summary["stride"], summary["smooth"], len(summary["windows"])) == (10, 5, 3, 7)
    streamed = CliRunner().invoke(app, ["predict", "--stream", str(video), "-w", str(tmp_path / "m.pt"),
                                        "--timeline", "--window", "1s", "--stride", "5", "--smooth", "3",
                                        "--output", str(tmp_path / "st"), "--json"])
    assert streamed.exit_code == 0, streamed.output
    assert json.loads(streamed.stdout)["segments"] == summary["segments"]  # OpenCV's frames, the same windows
    bad = CliRunner().invoke(app, ["predict", str(video), "-w", str(tmp_path / "m.pt"), "--timeline",
                                   "--stride", "abc"])
    assert bad.exit_code == 2 and "--stride 'abc'" in bad.stderr
