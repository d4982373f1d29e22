"""``tsnctl features --out F.parquet``: the same rows and values as the .npy + .csv of the same run, written
only when every clip is done, and one clear line when pyarrow (the 'parquet' extra) is missing."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import feature_model, write_feature_media, write_tiny_checkpoint
from typer.testing import CliRunner

import tsnctl.deploy.features as features_mod
from tsnctl.cli import app
from tsnctl.data.dataset import ClipSettings
from tsnctl.deploy.features import check_output, extract_features
from tsnctl.errors import UserError

SETTINGS = ClipSettings("video", 3, 40, 32, crop="three")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return write_feature_media(tmp_path_factory.mktemp("features_parquet"))


def _clips(media: Path) -> list[str]:
    return [str(media / "v0.mp4"), str(media / "frames" / "f0"), str(media / "v2.mp4")]


def _finished(folder: Path) -> list[str]:
    """What a user could take for a result: anything but the resumable .part folder."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".part"))


@pytest.mark.parametrize("level", ["video", "segment"])
def test_parquet_holds_the_npy_and_its_csv(media, tmp_path, level):
    pq = pytest.importorskip("pyarrow.parquet")  # the 'parquet' extra; 'make test' installs it with 'dev'
    pd = pytest.importorskip("pandas")
    model, clips = feature_model(), _clips(media)
    extract_features(model, SETTINGS, clips, tmp_path / "a.npy", level=level)
    summary = extract_features(model, SETTINGS, clips, tmp_path / "b.parquet", level=level)
    assert _finished(tmp_path) == ["a.csv", "a.npy", "b.parquet"]  # no sidecar and no .part for parquet
    npy = np.load(tmp_path / "a.npy")
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert (summary.rows, summary.dim, summary.index) == (len(rows), 512, None)
    table = pq.read_table(tmp_path / "b.parquet")
    assert str(table.schema.field("feature").type) == "fixed_size_list<element: float>[512]"
    assert [str(table.schema.field(c).type) for c in ["row", "clip", "segment", "frame", "time"]] == [
        "int64", "string", "int64", "int64", "double"]
    assert table.column("row").to_pylist() == [int(r["row"]) for r in rows] == list(range(len(npy)))
    assert table.column("clip").to_pylist() == [r["clip"] for r in rows]
    assert table.column("segment").to_pylist() == [int(r["segment"]) for r in rows]
    assert table.column("frame").to_pylist() == [int(r["frame"]) if r["frame"] else None for r in rows]
    assert table.column("time").to_pylist() == [float(r["time"]) if r["time"] else None for r in rows]
    features = table.column("feature").combine_chunks().flatten().to_numpy().reshape(len(npy), -1)
    np.testing.assert_array_equal(features, npy)
    frame = pd.read_parquet(tmp_path / "b.parquet")
    assert frame["clip"].tolist() == [r["clip"] for r in rows]
    np.testing.assert_array_equal(np.stack(frame["feature"].to_list()).astype(np.float32), npy)
    if level == "segment":  # frame folder rows have a frame index but no time; videos have both
        assert table.column("time").null_count == 3 and table.column("frame").null_count == 0
    else:
        assert table.column("frame").null_count == len(clips) and set(frame["segment"]) == {-1}


def test_killed_or_failed_runs_leave_no_parquet_and_resume(media, tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    model, clips, out = feature_model(), _clips(media), tmp_path / "f.parquet"
    real_features, calls = features_mod.clip_features, []

    def killed_at_the_second_clip(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_features(*args, **kwargs)

    monkeypatch.setattr(features_mod, "clip_features", killed_at_the_second_clip)
    with pytest.raises(KeyboardInterrupt):
        extract_features(model, SETTINGS, clips, out)
    assert _finished(tmp_path) == [] and len(list((tmp_path / "f.parquet.part").glob("*.npz"))) == 1
    monkeypatch.setattr(features_mod, "clip_features", real_features)

    def disk_full(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a table")
        raise OSError(28, "No space left on device", str(where))

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        extract_features(model, SETTINGS, clips, out)
    assert _finished(tmp_path) == [] and len(list((tmp_path / "f.parquet.part").glob("*.npz"))) == 3
    monkeypatch.undo()

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 10)
    failed = extract_features(model, SETTINGS, [*clips, str(bad)], tmp_path / "g.parquet")
    assert [c for c, _ in failed.failed] == [str(bad)] and not (tmp_path / "g.parquet").exists()

    again = extract_features(model, SETTINGS, clips, out)
    assert (again.resumed, again.rows) == (3, 3) and not (tmp_path / "f.parquet.part").exists()
    extract_features(model, SETTINGS, clips, tmp_path / "h.parquet")  # from scratch
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "h.parquet"))


def test_without_pyarrow_parquet_is_refused_before_any_work(media, tmp_path, monkeypatch):
    weights = write_tiny_checkpoint(tmp_path / "m.pt", 3, "center")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match=r"pip install 'tsnctl\[parquet\]'"):
        check_output(tmp_path / "f.parquet")
    with pytest.raises(UserError, match="pyarrow"):
        extract_features(feature_model(), SETTINGS, _clips(media), tmp_path / "f.parquet")
    assert not (tmp_path / "f.parquet.part").exists()
    run = CliRunner()
    result = run.invoke(app, ["features", str(media / "v0.mp4"), "-w", str(weights), "--out",
                              str(tmp_path / "f.parquet")])
    assert result.exit_code == 2 and "pip install 'tsnctl[parquet]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert _finished(tmp_path) == ["m.pt"] and not (tmp_path / "f.parquet.part").exists()
    result = run.invoke(app, ["features", str(media / "v0.mp4"), "-w", str(weights), "--out",
                              str(tmp_path / "f.txt")])
    assert result.exit_code == 2 and "must end in .npy or .parquet" in result.stderr


def test_cli_writes_parquet(media, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    weights = write_tiny_checkpoint(tmp_path / "m.pt", 3, "center")
    result = CliRunner().invoke(app, ["features", str(media / "v0.mp4"), str(media / "v1.mp4"), "-w", str(weights),
                                      "--level", "segment", "--out", str(tmp_path / "f.parquet")])
    assert result.exit_code == 0, result.output
    assert "6 x 512 features of 2 clips" in result.output and "rows:" not in result.output
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.num_rows == 6 and table.column("segment").to_pylist() == [0, 1, 2] * 2
