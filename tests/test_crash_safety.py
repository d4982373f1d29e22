"""Interrupted work is never lost: killed extractions and training runs resume to the same result."""

from __future__ import annotations

import csv
import filecmp
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import write_frames, write_video

from tsnctl.config import Config
from tsnctl.data.dataset import BadClip
from tsnctl.engine.loaders import EpochSampler
from tsnctl.engine.resume import restore_rng, rng_state
from tsnctl.engine.train import EpochPosition, train_one_epoch
from tsnctl.errors import UserError
from tsnctl.weights.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def cli(*args: object, **popen) -> subprocess.Popen:
    """``tsnctl ARGS`` in a fresh process (one torch thread: deterministic and light on shared CPUs)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-c", "from tsnctl.cli import main; main()", *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def signal_after(proc: subprocess.Popen, line_fragment: str, signum: int) -> str:
    """Send ``signum`` as soon as the process prints a line containing ``line_fragment``."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line_fragment in line:
            proc.send_signal(signum)
            break
    rest, _ = proc.communicate(timeout=300)
    return "".join(seen) + rest


# --- extraction ---------------------------------------------------------------------------------------

def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Linux /proc; empty elsewhere)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace") and "zombie" not in \
                    (cmdline.parent / "status").read_text():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "extract_report" not in p.name)


def files_in(folder: Path) -> int:
    """Files in a folder that the extraction may rename away (finished) while we look: 0 then."""
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def kill_midway(src: Path, out: Path) -> list[str]:
    """SIGKILL an extraction once one video is done and another is at most 64 of 100 frames in; the
    ``.part`` folders left behind (none if the race to the kill was lost)."""
    proc = cli("extract-frames", src, out, "--workers", 2)  # two workers: they must not outlive their parent
    while proc.poll() is None:
        done = [p for p in out.glob("class_*/*.mp4") if p.is_dir()]
        parts = [p for p in out.glob("class_*/*.mp4.part") if 0 < files_in(p) <= 64]
        if done and parts:
            proc.kill()
            break
        time.sleep(0.002)
    proc.wait(timeout=60)  # not communicate(): an orphaned worker would keep the output pipe open
    proc.stdout.close()
    if proc.returncode != -signal.SIGKILL:  # it finished before it could be killed
        return []
    time.sleep(0.5)
    orphans = processes_mentioning(str(out))
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "extraction workers outlived the killed main process"
    return [p.name for p in out.glob("class_*/*.part")]


@pytest.mark.slow
def test_extraction_killed_and_rerun_matches_an_uninterrupted_run(tmp_path):
    src = tmp_path / "videos"
    for i in range(8):  # 100 frames: extract-frames writes 32 at a time, so a video is half-written for a while
        write_video(src / f"class_{i % 2}" / f"clip_{i}.mp4", 100, height=120, width=160)
    code, out = finish(cli("extract-frames", src, tmp_path / "whole", "--workers", 1))
    assert code == 0, out

    killed = tmp_path / "killed"
    for _attempt in range(5):  # a busy machine may finish the half-written video between our look and the kill
        half = kill_midway(src, killed)
        if half:
            break
        shutil.rmtree(killed)
    assert half, "five extractions finished their half-written video before they could be killed"
    assert not (killed / "frame_list.txt").exists()

    code, out = finish(cli("extract-frames", src, killed, "--workers", 2))
    assert code == 0, out
    assert "already done" in out
    assert tree(killed) == tree(tmp_path / "whole") and not list(killed.rglob("*.part"))
    for name in tree(killed):
        if (killed / name).is_file():
            assert filecmp.cmp(killed / name, tmp_path / "whole" / name, shallow=False), name
    statuses = {row["path"]: row["status"] for row in csv.DictReader(open(killed / "extract_report.csv"))}
    assert len(statuses) == 8 and "skipped" in statuses.values() and "extracted" in statuses.values()
    assert not any(f"{name.removesuffix('.part')}" in statuses and statuses[name.removesuffix(".part")] == "skipped"
                   for name in half), "a half-written folder was taken as complete"

    code, out = finish(cli("extract-frames", src, killed, "--workers", 1, "--overwrite"))
    assert code == 0 and "already done" not in out
    assert {row["status"] for row in csv.DictReader(open(killed / "extract_report.csv"))} == {"extracted"}


# --- training -----------------------------------------------------------------------------------------

def tiny_dataset(root: Path, clips: int = 12) -> Path:
    lines = []
    for i in range(clips):
        write_frames(root / f"clip_{i:02d}", 8, seed=i)
        lines.append(f"clip_{i:02d} 8 {i % 2}\n")
    (root / "train.txt").write_text("".join(lines))
    return root / "train.txt"


def train_args(train_list: Path, *extra: str) -> list[str]:
    overrides = [f"data.train_list={train_list}", "data.short_side=40", "data.crop_size=32", "data.num_workers=0",
                 "model.backbone=resnet18", "model.num_classes=2", "model.dropout=0.5", "train.num_seg=2",
                 "train.batch_size=4", "train.epochs=2", "train.checkpoint_steps=2", "train.log_interval=100",
                 *extra]
    return ["-v", "train", *[x for o in overrides for x in ("-o", o)]]


@pytest.mark.slow
def test_training_stopped_and_killed_mid_epoch_resumes_to_identical_weights(tmp_path):
    """3 steps per epoch, 2 epochs, a checkpoint every 2 steps. Run B gets SIGTERM in epoch 1 (it saves and
    exits cleanly), is resumed, gets SIGKILL in epoch 2 after its mid-epoch checkpoint, and is resumed again.
    Dropout is on, so the restored RNG matters too."""
    args = train_args(tiny_dataset(tmp_path / "data"))
    code, out = finish(cli(*args, "--output", tmp_path / "A"))
    assert code == 0, out

    proc = cli(*args, "--output", tmp_path / "B")
    out = signal_after(proc, "saved last.pt at epoch 1 step 2", signal.SIGTERM)
    stopped = re.search(r"stopped by SIGTERM at epoch 1, step (\d)", out.replace("\n", " "))
    assert proc.returncode == 128 + signal.SIGTERM and stopped and "Traceback" not in out, out
    # The signal lands during step 2's bookkeeping or during step 3; either way that step is saved.
    assert load_checkpoint(tmp_path / "B" / "last.pt")["step"] == int(stopped.group(1))

    proc = cli(*args, "--output", tmp_path / "B", "--resume")
    out = signal_after(proc, "saved last.pt at epoch 2 step 1", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, out
    state = load_checkpoint(tmp_path / "B" / "last.pt")
    assert (state["epoch"], state["step"]) == (1, 1), "not a mid-epoch checkpoint"

    code, out = finish(cli(*args, "--output", tmp_path / "B", "--resume"))
    assert code == 0, out
    assert "resumed from" in out and "at epoch 2, step 1" in out.replace("\n", " ")
    a, b = load_checkpoint(tmp_path / "A" / "last.pt"), load_checkpoint(tmp_path / "B" / "last.pt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (2, 6)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert open(tmp_path / "A" / "metrics.csv").read() == open(tmp_path / "B" / "metrics.csv").read()


class NanAt(torch.nn.Module):
    """Finite logits, then NaN from step ``bad_step`` on."""

    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 2)
        self.calls, self.bad_step = 0, bad_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.calls >= self.bad_step else out


class Batches(list):
    """A stand-in loader: its batches, and the clip settings ``train_one_epoch`` reads."""

    dataset = SimpleNamespace(settings=SimpleNamespace(num_seg=1))


def uint8_clips(n: int) -> torch.Tensor:
    """``n`` loader-style uint8 clips ``[n, 1, 3, 2, 2]`` (the loop normalizes them)."""
    return torch.randint(0, 256, (n, 1, 3, 2, 2), dtype=torch.uint8)


def test_nan_loss_stops_at_that_step_before_updating_weights():
    model = NanAt(bad_step=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = Batches((uint8_clips(2), torch.tensor([0, 1]), []) for _ in range(3))
    saved = []

    def after_step(position: EpochPosition) -> None:
        saved.append({k: v.clone() for k, v in model.state_dict().items()})

    with pytest.raises(UserError) as err:
        train_one_epoch(model, batches, optimizer, torch.device("cpu"), 0, Config(), after_step=after_step)
    assert "loss is nan at epoch 1, step 2/3" in str(err.value) and err.value.exit_code == 1
    assert len(saved) == 1  # only the good step reached the checkpoint callback
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved[0].items())


def test_all_bad_batch_is_skipped_and_recorded():
    recorded = []

    class Log:
        def record(self, split, epoch, bad):
            recorded.extend(bad)

    model = NanAt(bad_step=99)
    batches = Batches([(torch.empty(0), torch.empty(0, dtype=torch.long), [BadClip(3, "x.mp4", "x.mp4: empty file")]),
                       (uint8_clips(2), torch.tensor([0, 1]), [])])
    position = EpochPosition()
    stats = train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"), 0,
                            Config(), position=position, bad_log=Log())
    assert model.calls == 1 and position.step == 2 and position.sums["counted"] == 1
    assert [clip.name for clip in recorded] == ["x.mp4"] and stats.loss > 0


def test_epoch_sampler_matches_random_sampler_and_skips_done_steps():
    shuffled = torch.utils.data.DistributedSampler(range(10), num_replicas=1, rank=0, seed=3 * 100_003)
    sampler = EpochSampler(shuffled)
    sampler.set_epoch(2)
    generator = torch.Generator()
    generator.manual_seed(3 * 100_003 + 2)
    full = [(2, index) for index in torch.utils.data.RandomSampler(range(10), generator=generator)]
    assert list(sampler) == full
    sampler.set_epoch(2, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and (expected[1] == got[1]).all() and expected[2] == got[2]
