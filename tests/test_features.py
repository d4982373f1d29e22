"""``tsnctl features``: pooled features equal the model's own (fc of them = its logits), resumable, shardable."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import feature_model, write_feature_media
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.config import Config
from tsnctl.data.dataset import ClipSettings, load_clip
from tsnctl.data.sampling import eval_indices
from tsnctl.data.transforms import normalize
from tsnctl.deploy.features import extract_features
from tsnctl.deploy.predict import clip_sample
from tsnctl.errors import UserError
from tsnctl.weights.checkpoint import save_checkpoint

SETTINGS = ClipSettings("video", 3, 40, 32, crop="three")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return write_feature_media(tmp_path_factory.mktemp("features"))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_video_features_through_the_fc_are_the_logits(media, tmp_path):
    model = feature_model()
    clips = [str(media / "v0.mp4"), str(media / "v3.mp4"), str(media / "frames" / "f0")]
    summary = extract_features(model, SETTINGS, clips, tmp_path / "f.npy")
    features = np.load(tmp_path / "f.npy")
    assert features.shape == (3, 512) and (summary.rows, summary.dim) == (3, 512)
    assert [r["clip"] for r in _rows(tmp_path / "f.csv")] == clips
    for clip, feature in zip(clips, features, strict=True):
        sample, fmt = clip_sample(clip, SETTINGS.image_template)
        views = load_clip(sample, ClipSettings(fmt, 3, 40, 32, crop="three"), np.random.default_rng(0))
        with torch.no_grad():
            x = normalize(views[None])
            pooled = model.forward_features(x)[0].mean(dim=0)
            logits = model(x)[0]
            np.testing.assert_allclose(feature, pooled.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(model.head.fc(torch.from_numpy(feature)).numpy(), logits.numpy(),
                                       rtol=1e-4, atol=1e-5)
    assert not (tmp_path / "f.npy.part").exists()


def test_segment_features_average_to_the_video_feature(media, tmp_path):
    model = feature_model()
    clips = [str(media / "v1.mp4"), str(media / "v2.mp4")]
    extract_features(model, SETTINGS, clips, tmp_path / "v.npy")
    extract_features(model, SETTINGS, clips, tmp_path / "s.npy", level="segment")
    video, segment = np.load(tmp_path / "v.npy"), np.load(tmp_path / "s.npy")
    assert segment.shape == (6, 512)
    np.testing.assert_allclose(segment.reshape(2, 3, 512).mean(axis=1), video, rtol=1e-5, atol=1e-6)
    rows = _rows(tmp_path / "s.csv")
    assert [int(r["frame"]) for r in rows[:3]] == eval_indices(17, 3)  # v1.mp4 has 17 frames
    assert [float(r["time"]) for r in rows[:3]] == [round(f / 10, 3) for f in eval_indices(17, 3)]  # 10 fps
    assert [r["segment"] for r in rows] == ["0", "1", "2"] * 2


def test_resume_after_a_failure_and_refuse_other_options(media, tmp_path):
    model = feature_model()
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 10)
    clips = [str(media / "v0.mp4"), str(bad), str(media / "v1.mp4")]
    first = extract_features(model, SETTINGS, clips, tmp_path / "f.npy")
    assert [c for c, _ in first.failed] == [str(bad)]
    assert not (tmp_path / "f.npy").exists() and not (tmp_path / "f.csv").exists()  # nothing finished-looking
    assert len(list((tmp_path / "f.npy.part").glob("*.npz"))) == 2
    with pytest.raises(UserError, match="other options"):
        extract_features(model, SETTINGS, clips, tmp_path / "f.npy", level="segment")
    again = extract_features(model, SETTINGS, [clips[0], clips[2]], tmp_path / "f.npy")
    assert (again.resumed, again.failed, again.rows) == (2, [], 2)
    extract_features(model, SETTINGS, [clips[0], clips[2]], tmp_path / "g.npy")  # from scratch
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), np.load(tmp_path / "g.npy"))
    assert not (tmp_path / "f.npy.part").exists()


def test_shards_split_the_clips(media, tmp_path):
    model = feature_model()
    clips = [str(media / f"v{i}.mp4") for i in range(4)]
    names = []
    for i in range(2):
        summary = extract_features(model, SETTINGS, clips, tmp_path / f"s{i}.npy", shard=(i, 2))
        names += [r["clip"] for r in _rows(tmp_path / f"s{i}.csv")]
        assert summary.rows == len(np.load(tmp_path / f"s{i}.npy"))
    assert sorted(names) == sorted(clips)


def test_cli_features_agree_with_test_save_scores(media, tmp_path):
    cfg = Config()
    cfg.model.backbone, cfg.model.num_classes = "resnet18", 5
    cfg.data.format, cfg.data.short_side, cfg.data.crop_size, cfg.data.num_workers = "video", 40, 32, 0
    cfg.test.num_seg, cfg.test.crop, cfg.test.batch_size, cfg.train.device = 3, "three", 2, "cpu"
    save_checkpoint(tmp_path / "m.pt", {"model": feature_model().state_dict(), "epoch": 0, "config": cfg.to_dict(),
                                        "class_names": list("abcde")})
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{media / f'v{i}.mp4'} {i}\n" for i in range(3)))
    run = CliRunner()
    result = run.invoke(app, ["features", str(lst), "-w", str(tmp_path / "m.pt"), "--out", str(tmp_path / "f.npy")])
    assert result.exit_code == 0, result.output
    result = run.invoke(app, ["test", "-w", str(tmp_path / "m.pt"), "--list", str(lst), "--save-scores",
                              str(tmp_path / "scores.csv"), "--report-dir", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    scores = _rows(tmp_path / "scores.csv")
    logits = np.array([[float(r[f"logit_{c}"]) for c in range(5)] for r in scores])
    with torch.no_grad():
        through_fc = feature_model().head.fc(torch.from_numpy(np.load(tmp_path / "f.npy"))).numpy()
    np.testing.assert_allclose(through_fc, logits, rtol=1e-4, atol=1e-5)
    bad = run.invoke(app, ["features", str(lst), "-w", str(tmp_path / "m.pt"), "--out", str(tmp_path / "x.npy"),
                           "--shard", "2/2"])
    assert bad.exit_code == 2 and "--shard '2/2'" in bad.stderr
