"""extract-frames keeps to its output folder: concurrent runs, hostile list paths, and things in OUT that
look like finished clips (issue 13, items 2-4)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_video
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.data.lists import read_list

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, list(map(str, args)))
    return result.exit_code, result.output


def cli(*args: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-c", "from tsnctl.cli import main; main()", *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def frames_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("img_*.jpg"))


def expected_names(n: int) -> list[str]:
    return [f"img_{i:05d}.jpg" for i in range(1, n + 1)]


def listed(frame_list: Path) -> dict[str, int]:
    return {line.split()[0]: int(line.split()[1]) for line in frame_list.read_text().splitlines()}


def report(path: Path) -> dict[str, dict[str, str]]:
    return {row["path"]: row for row in csv.DictReader(open(path))}


@pytest.fixture
def videos(tmp_path) -> Path:
    """Two classes, clip_i with 20 + i frames."""
    for i in range(4):
        write_video(tmp_path / "videos" / f"c{i % 2}" / f"clip_{i}.mp4", 20 + i, height=24, width=32)
    return tmp_path / "videos"


# --- item 2: concurrent runs, proof of completion -------------------------------------------------------

@pytest.mark.slow
def test_two_runs_on_one_out_together_write_a_complete_result(tmp_path):
    src = tmp_path / "videos"
    counts = {f"c{i % 2}/clip_{i}.mp4": 60 + i for i in range(10)}
    for name, n in counts.items():
        write_video(src / name, n, height=120, width=160)
    out = tmp_path / "out"
    procs = [cli("extract-frames", src, out, "--workers", 1) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
    for proc in procs:
        proc.stdout.close()
    for code, text in results:
        assert code == 0 and "Traceback" not in text, text
    assert listed(out / "frame_list.txt") == counts
    for name, n in counts.items():
        assert frames_in(out / name) == expected_names(n), name
    assert not list(out.rglob("*.part")) and not list(out.rglob("*.lock"))
    code, text = run("extract-frames", src, out, "--workers", 1)
    assert code == 0 and "10 already done" in text


def test_a_clip_locked_by_another_run_is_waited_for_and_not_written_twice(tmp_path, videos):
    from tsnctl.prepare.extract import extract_video
    from tsnctl.prepare.folders import acquire, release

    out = tmp_path / "out"
    (out / "c0").mkdir(parents=True)
    lock = acquire(out / "c0" / "clip_0.mp4.lock", wait=False)  # this test is the "other run" for clip_0
    proc = cli("extract-frames", videos, out, "--workers", 1)
    try:
        deadline = time.monotonic() + 120
        while not all((out / f"c{i % 2}" / f"clip_{i}.mp4").is_dir() for i in (1, 2, 3)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, "the run did not wait for the locked clip"
        assert not (out / "c0" / "clip_0.mp4.part").exists(), "the run wrote a clip another run holds"
        extract_video(videos / "c0" / "clip_0.mp4", out / "c0" / "clip_0.mp4")
    finally:
        release(lock)
    assert proc.wait(timeout=120) == 0, proc.stdout.read()
    proc.stdout.close()
    assert report(out / "extract_report.csv")["c0/clip_0.mp4"]["status"] == "skipped"
    assert listed(out / "frame_list.txt")["c0/clip_0.mp4"] == 20


def test_lock_is_released_when_its_holder_is_killed(tmp_path):
    from tsnctl.prepare.folders import acquire, release

    path = tmp_path / "clip.mp4.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from tsnctl.prepare.folders import acquire; "
                               f"acquire(__import__('pathlib').Path({str(path)!r}), True); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"
    assert acquire(path, wait=False) is None
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdout.close()
    lock = acquire(path, wait=False)
    assert lock is not None and lock.held
    release(lock)
    assert not path.exists()


@pytest.mark.parametrize("present", [range(8, 36), range(1, 29)])
def test_a_folder_with_missing_frames_is_never_taken_as_finished(tmp_path, present):
    """The damage two old runs left: frames 8-35 (or 1-28) of 35 under the final name, no marker."""
    write_video(tmp_path / "videos" / "c" / "v.mp4", 35, height=24, width=32)
    out = tmp_path / "out"
    folder = out / "c" / "v.mp4"
    folder.mkdir(parents=True)
    for i in present:
        (folder / f"img_{i:05d}.jpg").write_bytes(b"\xff\xd8partial")
    code, text = run("extract-frames", tmp_path / "videos", out, "--workers", 1)
    assert code == 0, text
    assert listed(out / "frame_list.txt") == {"c/v.mp4": 35}
    assert frames_in(folder) == expected_names(35)
    assert report(out / "extract_report.csv")["c/v.mp4"]["status"] == "extracted"


def test_a_marker_that_disagrees_with_the_folder_means_extract_again(tmp_path, videos):
    from tsnctl.prepare.folders import MARKER

    out = tmp_path / "out"
    assert run("extract-frames", videos, out, "--workers", 1)[0] == 0
    folder = out / "c1" / "clip_3.mp4"
    assert (folder / MARKER).is_file()
    (folder / "img_00005.jpg").unlink()
    code, text = run("extract-frames", videos, out, "--workers", 1)
    assert code == 0 and "3 already done" in text, text
    assert frames_in(folder) == expected_names(23)
    assert "extracted again" in report(out / "extract_report.csv")["c1/clip_3.mp4"]["reason"]


def test_a_complete_folder_from_before_markers_is_kept_and_gets_its_marker(tmp_path, videos):
    from tsnctl.prepare.folders import MARKER

    out = tmp_path / "out"
    assert run("extract-frames", videos, out, "--workers", 1)[0] == 0
    folder = out / "c0" / "clip_2.mp4"
    (folder / MARKER).unlink()  # as tsnctl left it before markers
    before = (folder / "img_00001.jpg").stat().st_mtime_ns
    code, text = run("extract-frames", videos, out, "--workers", 1)
    assert code == 0 and "4 already done" in text, text
    assert (folder / MARKER).is_file() and (folder / "img_00001.jpg").stat().st_mtime_ns == before


# --- item 3: list paths cannot leave OUT ------------------------------------------------------------------

def test_an_absolute_list_path_is_extracted_inside_out(tmp_path):
    video = write_video(tmp_path / "videos" / "c" / "v.mp4", 12, height=24, width=32)
    (tmp_path / "list.txt").write_text(f"{video} 1\n")
    out = tmp_path / "out"
    code, text = run("extract-frames", tmp_path / "list.txt", out, "--workers", 1)
    assert code == 0, text
    assert sorted(p.name for p in video.parent.iterdir()) == ["v.mp4"], "wrote next to the source video"
    folder = str(video).lstrip("/")
    assert listed(out / "list_frames.txt") == {folder: 12}
    assert frames_in(out / folder) == expected_names(12)
    sample = read_list(out / "list_frames.txt", "frames")[0]  # tsnctl's own reader takes the list
    assert sample.path == out / folder and sample.num_frames == 12
    assert run("check", out / "list_frames.txt", "--format", "frames", "--min-frames", 1,
               "--report", tmp_path / "check.csv")[0] == 0


def test_dotdot_paths_with_overwrite_touch_nothing_outside_out(tmp_path):
    write_video(tmp_path / "videos" / "v.mp4", 12, height=24, width=32)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.txt").write_text("../videos/v.mp4 0\n")
    out = tmp_path / "a" / "out"
    victim = tmp_path / "a" / "videos" / "v.mp4"  # where OUT/../videos/v.mp4 points
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("not yours")
    for extra in ([], ["--overwrite"]):
        code, text = run("extract-frames", tmp_path / "lists" / "list.txt", out, "--workers", 1, *extra)
        assert code == 0, text
        assert (victim / "keep.txt").read_text() == "not yours"
        assert sorted(p.name for p in victim.parent.iterdir()) == ["v.mp4"]
        assert listed(out / "list_frames.txt") == {"videos/v.mp4": 12}
        assert frames_in(out / "videos" / "v.mp4") == expected_names(12)


def test_merge_lists_joins_shards_of_rewritten_list_paths(tmp_path):
    lines = []
    for i in range(4):
        video = write_video(tmp_path / "videos" / f"v{i}.mp4", 5 + i, height=24, width=32)
        lines.append(f"{video} 0\n" if i % 2 else f"../videos/v{i}.mp4 1\n")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.txt").write_text("".join(lines))
    src, out = tmp_path / "lists" / "list.txt", tmp_path / "out"
    assert run("extract-frames", src, tmp_path / "single", "--workers", 1)[0] == 0
    for i in range(2):
        assert run("extract-frames", src, out, "--workers", 1, "--shard", f"{i}/2")[0] == 0
    shard_lists = [out / f"list_frames.shard-{i}-of-2.txt" for i in range(2)]
    code, text = run("merge-lists", src, *shard_lists, "-o", tmp_path / "merged.txt")
    assert code == 0, text
    assert (tmp_path / "merged.txt").read_text() == (tmp_path / "single" / "list_frames.txt").read_text()
    assert "videos/v0.mp4 5 1" in (tmp_path / "merged.txt").read_text().splitlines()


def test_two_list_lines_for_one_frame_folder_are_refused(tmp_path, videos):
    (videos / "list.txt").write_text("c0/clip_0.mp4 0\nc1/clip_1.mp4 1\n./c0//clip_0.mp4 1\n")
    code, text = run("extract-frames", videos / "list.txt", tmp_path / "out", "--workers", 1)
    assert code == 2, text
    assert "list.txt:1" in text and "list.txt:3" in text and "Traceback" not in text
    assert not (tmp_path / "out" / "c0").exists()
    (videos / "list.txt").write_text("c0/clip_0.mp4 0\nlist_frames.txt 1\n")  # the frame list's own name
    code, text = run("extract-frames", videos / "list.txt", tmp_path / "out", "--workers", 1)
    assert code == 2 and "list.txt:2" in text and "extract-frames writes itself" in text, text


def test_frame_folder_names(tmp_path):
    from tsnctl.prepare.extract import VideoJob
    from tsnctl.prepare.folders import check_folders, folder_name

    assert folder_name("class/video.mp4") == "class/video.mp4"
    assert folder_name("/data/k400/a b/v.mp4") == "data/k400/a b/v.mp4"
    assert folder_name("../../x/./y//v.mp4") == "x/y/v.mp4"
    assert folder_name("a/../../../v.mp4") == "v.mp4"
    assert folder_name("..") == folder_name("/") == ""

    def jobs(*names):
        return [VideoJob(n, tmp_path / n, 0, folder_name(n), f"l:{i}") for i, n in enumerate(names, 1)]

    check_folders(jobs("a/v.mp4", "b/v.mp4", "v.mp4"))
    for clash in (["a/v.mp4", "/a/v.mp4"], ["v.mp4", "v.mp4.part"], ["a", "a/v.mp4"], ["a/v.mp4", "a"],
                  ["x.lock/v.mp4", "x"], [".."]):
        with pytest.raises(Exception, match="l:1") as err:
            check_folders(jobs(*clash))
        assert err.value.exit_code == 2


# --- item 4: things in OUT that look like finished clips ------------------------------------------------

def test_an_empty_folder_named_like_a_clip_is_extracted(tmp_path, videos):
    out = tmp_path / "out"
    (out / "c1" / "clip_1.mp4").mkdir(parents=True)
    code, text = run("extract-frames", videos, out, "--workers", 1)
    assert code == 0 and "already done" not in text, text
    assert listed(out / "frame_list.txt")["c1/clip_1.mp4"] == 21
    assert read_list(out / "frame_list.txt", "frames")  # no 0-frame line


def test_a_symlink_named_like_a_clip_is_never_followed(tmp_path, videos):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "img_00001.jpg").write_bytes(b"precious")
    out = tmp_path / "out"
    (out / "c0").mkdir(parents=True)
    (out / "c0" / "clip_0.mp4").symlink_to(elsewhere)
    (out / "c1").symlink_to(elsewhere, target_is_directory=True)  # a whole class folder
    code, text = run("extract-frames", videos, out, "--workers", 1)
    assert code == 1 and "symbolic link" in text and "Traceback" not in text, text
    assert listed(out / "frame_list.txt") == {"c0/clip_2.mp4": 22}
    assert sorted(p.name for p in elsewhere.iterdir()) == ["img_00001.jpg"]
    assert (elsewhere / "img_00001.jpg").read_bytes() == b"precious"

    code, text = run("extract-frames", videos, out, "--workers", 1, "--overwrite")
    assert code == 1, text  # the linked class folder is still refused; the clip's own link is replaced
    assert not (out / "c0" / "clip_0.mp4").is_symlink() and frames_in(out / "c0" / "clip_0.mp4") == expected_names(20)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["img_00001.jpg"]
    assert (elsewhere / "img_00001.jpg").read_bytes() == b"precious"


def test_a_folder_holding_other_files_is_not_touched(tmp_path, videos):
    out = tmp_path / "out"
    (out / "c0" / "clip_0.mp4").mkdir(parents=True)
    (out / "c0" / "clip_0.mp4" / "notes.txt").write_text("mine")
    (out / "c1" / "clip_1.mp4.lock").mkdir(parents=True)  # a folder where the clip's lock file goes
    code, text = run("extract-frames", videos, out, "--workers", 1)
    assert code == 1 and "not frames" in text and "clip_1.mp4.lock" in text and "Traceback" not in text, text
    assert (out / "c0" / "clip_0.mp4" / "notes.txt").read_text() == "mine"
    assert sorted(listed(out / "frame_list.txt")) == ["c0/clip_2.mp4", "c1/clip_3.mp4"]


# --- shards on one shared OUT -------------------------------------------------------------------------------

@pytest.mark.slow
def test_concurrent_shards_on_one_out_equal_a_single_run(tmp_path, videos):
    assert run("extract-frames", videos, tmp_path / "single", "--workers", 1)[0] == 0
    out = tmp_path / "shared"
    procs = [cli("extract-frames", videos, out, "--workers", 1, "--shard", f"{i}/3") for i in range(3)]
    for proc in procs:
        text, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, text
    lists = [out / f"frame_list.shard-{i}-of-3.txt" for i in range(3)]
    code, text = run("merge-lists", videos, *lists, "-o", tmp_path / "merged.txt")
    assert code == 0, text
    assert (tmp_path / "merged.txt").read_text() == (tmp_path / "single" / "frame_list.txt").read_text()
