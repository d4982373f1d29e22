"""``tsnctl bench`` and ``extract-frames --dry-run`` on tiny synthetic media."""

import functools
import json
import sys
import types

import pytest
from conftest import write_frames, write_video
from typer.testing import CliRunner

from tsnctl.bench import extract, peers
from tsnctl.cli import app
from tsnctl.data import transforms as T
from tsnctl.data.dataset import ClipSettings, load_clip
from tsnctl.data.lists import Sample
from tsnctl.data.sampling import eval_indices

reference = peers.load("reference")  # benchmarks/peers/reference.py of this checkout

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


def test_the_baseline_computes_the_same_test_views(tmp_path):
    """The reference re-implementation is only a fair baseline if it does the same work: same numbers."""
    folder = write_frames(tmp_path / "clip", 12, height=60, width=80)
    indices = eval_indices(12, 3)
    ours = T.normalize(load_clip(Sample("clip", folder, 0, 12), ClipSettings("frames", 3, 64, 56, crop="ten"),
                                 None)).numpy()
    theirs = reference.frames_clip(folder, indices, "test", "ten", 64, 56)
    assert theirs.shape == ours.shape == (30, 3, 56, 56)
    assert abs(theirs - ours).max() < 0.02  # OpenCV and PIL round the 60->64 resize differently, by 1 level


def test_bench_data_on_the_config_lists(tmp_path):
    folder = write_frames(tmp_path / "clip", 12, height=60, width=80)
    (tmp_path / "list.txt").write_text(f"{folder} 12 0\n")
    out = tmp_path / "bench.json"
    args = ["-o", f"data.train_list={tmp_path / 'list.txt'}", "-o", f"data.test_list={tmp_path / 'list.txt'}",
            "-o", "data.short_side=64", "-o", "data.crop_size=56", "-o", "test.num_seg=3"]
    result = run("bench", "data", *args, "--formats", "frames", "--min-time", "0.05", "--json", out)
    assert "speed-up" in result.output
    cases = json.loads(out.read_text())["cases"]
    assert [(c["fmt"], c["mode"], c["views"]) for c in cases] == [("frames", "train", "3"),
                                                                  ("frames", "test", "3 x 10 = 30")]
    assert all(c["loader_ms"] > 0 and c["baseline_ms"] > 0 and c["speedup"] > 0 for c in cases)


def test_bench_data_on_generated_mixed_frame_sizes_reports_the_loader_overhead(tmp_path):
    out = tmp_path / "bench.json"
    args = ["-o", "data.short_side=64", "-o", "data.crop_size=56", "-o", "test.num_seg=3", "-o", "test.batch_size=3"]
    result = run("bench", "data", *args, "--formats", "frames", "--modes", "train,test", "--frame-sizes",
                 "96x64,64x112,80x70", "--min-time", "0.05", "--no-baseline", "--json", out)
    assert "overhead" in result.output
    bench = json.loads(out.read_text())
    assert "96x64,64x112,80x70" in bench["source"]
    for case in bench["cases"]:
        stages = sum(case["stages_ms"][k] for k in ("read", "decode", "transform"))
        assert case["overhead_ms"] == pytest.approx(case["loader_ms"] - stages)
        assert stages > 0 and case["baseline_ms"] is None


def test_bench_model_runs_each_variant(tmp_path):
    out = tmp_path / "model.json"
    run("bench", "model", "-o", "model.backbone=resnet18", "-o", "data.short_side=32", "-o", "data.crop_size=32",
        "--device", "cpu", "--batch-size", "1", "--num-seg", "2", "--min-time", "0.01", "--threads", "1",
        "--json", out)
    cases = json.loads(out.read_text())["cases"]
    assert [c["variant"] for c in cases][:2] == ["fp32", "fp32 channels_last"]
    assert all(c["forward_ips"] > 0 and c["train_ips"] > 0 for c in cases if not c["note"])


def test_extract_dry_run_counts_frames_and_writes_nothing(tmp_path):
    for name, frames in (("a.mp4", 12), ("b.mp4", 7)):
        write_video(tmp_path / "videos" / "jump" / name, frames)
    result = run("extract-frames", tmp_path / "videos", tmp_path / "out", "--dry-run")
    assert "2 videos, ~19 frames" in result.output
    assert "KB per frame from 6 sample frames" in result.output
    assert not (tmp_path / "out").exists()



def test_ffmpeg_is_taken_from_the_path_first(monkeypatch):
    monkeypatch.setattr(extract.shutil, "which", lambda name: f"/opt/bin/{name}")
    assert extract.find_ffmpeg() == "/opt/bin/ffmpeg"


def test_ffmpeg_falls_back_to_imageio_ffmpeg_then_to_none(monkeypatch):
    monkeypatch.setattr(extract.shutil, "which", lambda name: None)
    wheel = types.SimpleNamespace(get_ffmpeg_exe=lambda: "/site-packages/imageio_ffmpeg/binaries/ffmpeg")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", wheel)
    assert extract.find_ffmpeg() == "/site-packages/imageio_ffmpeg/binaries/ffmpeg"
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # not installed: the import raises ImportError
    assert extract.find_ffmpeg() is None


def test_bench_extract_skips_ffmpeg_with_a_note_when_there_is_none(monkeypatch):
    monkeypatch.setattr(extract, "find_ffmpeg", lambda: None)
    result = extract.bench_extract(repeats=1, num_frames=5)
    assert result.cases[-1].frames_per_s is None and "not found" in result.cases[-1].note
    assert result.ratio_to_ffmpeg is None and "skipped" in result.ffmpeg


def test_bench_extract_against_ffmpeg(tmp_path, monkeypatch):
    """The real comparison on a tiny clip, through the CLI (ffmpeg from the PATH or imageio-ffmpeg)."""
    if extract.find_ffmpeg() is None:
        pytest.skip("no ffmpeg on the PATH and imageio-ffmpeg not installed")
    monkeypatch.setattr(extract, "bench_extract", functools.partial(extract.bench_extract, num_frames=10))
    result = run("bench", "extract", "--repeats", "1", "--json", tmp_path / "extract.json")
    assert "ffmpeg version" in result.output and "extract-frames / ffmpeg" in result.output
    bench = json.loads((tmp_path / "extract.json").read_text())
    assert bench["cases"][-1]["name"] == extract.FFMPEG_CASE
    assert all(case["frames_per_s"] > 0 for case in bench["cases"])
    assert bench["ratio_to_ffmpeg"] > 0


def test_bench_data_refuses_a_malformed_frame_size():
    result = CliRunner().invoke(app, ["bench", "data", "--frame-size", "1280by720"])
    assert result.exit_code == 2 and "--frame-sizes '1280by720': expected WIDTHxHEIGHT" in result.output
    assert "Traceback" not in result.output
