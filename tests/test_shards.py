"""Extraction across machines: shards partition the videos; merged shard lists equal one machine's list."""

import pytest
from conftest import write_video
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.errors import UserError
from tsnctl.prepare.shards import merge_frame_lists, parse_shard, shard_of

runner = CliRunner()


def test_shards_partition_every_video_exactly_once():
    names = [f"class_{i % 7}/video_{i:05d}.mp4" for i in range(2000)]
    for count in (1, 2, 3, 8, 64):
        shards = [[n for n in names if shard_of(n, count) == i] for i in range(count)]
        assert sorted(sum(shards, [])) == sorted(names)
        if count <= 8:
            assert min(map(len, shards)) > 0.7 * len(names) / count  # roughly balanced
    # stable: depends on the name only, not on the order or on the other videos
    assert [shard_of(n, 8) for n in names] == [shard_of(n, 8) for n in reversed(names)][::-1]


def test_parse_shard():
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "-1/4", "a/b", "3", "1/0"):
        with pytest.raises(UserError, match="expected I/N"):
            parse_shard(bad)


def test_merge_rejects_duplicates_and_reports_missing(tmp_path):
    (tmp_path / "a.txt").write_text("x 3 0\ny 4 1\n")
    (tmp_path / "b.txt").write_text("y 4 1\n")
    with pytest.raises(UserError, match="already in another shard list"):
        merge_frame_lists(["x", "y"], [tmp_path / "a.txt", tmp_path / "b.txt"])
    with pytest.raises(UserError, match="1 of 3 videos are in no shard list, e.g. z"):
        merge_frame_lists(["x", "y", "z"], [tmp_path / "a.txt"])
    assert merge_frame_lists(["y", "z", "x"], [tmp_path / "a.txt"], allow_missing=True) == ["y 4 1\n", "x 3 0\n"]


@pytest.mark.slow
def test_sharded_extraction_equals_a_single_machine_run(tmp_path):
    src = tmp_path / "videos"
    for i in range(9):
        write_video(src / f"class_{i % 3}" / f"v{i}.mp4", 3 + i % 4, height=16, width=16)

    def run(*args):
        result = runner.invoke(app, list(map(str, args)))
        assert result.exit_code == 0, result.output
        return result

    run("extract-frames", src, tmp_path / "single", "--workers", 1)
    shard_lists = []
    for i in range(3):
        run("extract-frames", src, tmp_path / "sharded", "--workers", 1, "--shard", f"{i}/3")
        shard_lists.append(tmp_path / "sharded" / f"frame_list.shard-{i}-of-3.txt")
    # a re-run of one shard selects the same videos
    before = shard_lists[1].read_text()
    run("extract-frames", src, tmp_path / "sharded", "--workers", 1, "--shard", "1/3")
    assert shard_lists[1].read_text() == before
    run("merge-lists", src, *shard_lists, "-o", tmp_path / "merged.txt")
    assert (tmp_path / "merged.txt").read_text() == (tmp_path / "single" / "frame_list.txt").read_text()
    single = sorted(p.relative_to(tmp_path / "single") for p in (tmp_path / "single").rglob("*.jpg"))
    sharded = sorted(p.relative_to(tmp_path / "sharded") for p in (tmp_path / "sharded").rglob("*.jpg"))
    assert single == sharded
    missing = runner.invoke(app, ["merge-lists", str(src), str(shard_lists[0]), "-o", str(tmp_path / "m2.txt")])
    assert missing.exit_code == 2 and "are in no shard list" in missing.output
