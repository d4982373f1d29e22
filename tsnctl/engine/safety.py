"""Keeping a training run honest and recoverable: bad clips, stop signals and diverging losses.

Bad clips are skipped (never replaced by another clip), written to ``bad_samples.csv`` and counted;
past ``train.max_bad_fraction`` of the training list the run stops. SIGINT/SIGTERM only raise a flag,
so the loop finishes its step, saves a checkpoint and exits; a second signal stops at once. With several
processes the ranks agree on both (``step_consensus``, ``BadSampleLog.flush``), so they stop together.
"""

from __future__ import annotations

import csv
import logging
import math
import signal
import threading
from pathlib import Path
from types import FrameType

from tsnctl.data.dataset import BadClip
from tsnctl.engine import ranks as dist
from tsnctl.errors import UserError

log = logging.getLogger("tsnctl")


class BadSampleLog:
    """``bad_samples.csv``: one row per unreadable clip (split, epoch, index, path, reason)."""

    FIELDS = ["split", "epoch", "index", "path", "reason"]

    def __init__(self, path: Path, num_train: int, max_fraction: float, resume: bool = False) -> None:
        self.path = path
        self.num_train = num_train
        self.max_fraction = max_fraction
        self.seen: set[tuple[str, int]] = set()
        self.pending: list[tuple[int, BadClip]] = []  # this rank's training clips, until the epoch's flush
        if resume and path.is_file():
            with open(path, newline="") as f:
                self.seen = {(row["split"], int(row["index"])) for row in csv.DictReader(f)}
        elif dist.is_main():
            path.unlink(missing_ok=True)

    @property
    def train_bad(self) -> int:
        return sum(split == "train" for split, _ in self.seen)

    def record(self, split: str, epoch: int, bad: list[BadClip], gathered: bool = False) -> None:
        """Log new bad clips; stop the run when too many training clips are bad.

        With several processes each rank holds its own clips until ``flush`` at the end of the epoch
        (``gathered``: ``bad`` is already the same list on every rank, as ``evaluate_all`` returns it).
        """
        if dist.world_size() > 1 and not gathered:
            self.pending += [(epoch, clip) for clip in bad]
            return
        new = list({clip.index: clip for clip in bad if (split, clip.index) not in self.seen}.values())
        if new and dist.is_main():
            write_header = not self.path.exists()
            with open(self.path, "a", newline="") as f:
                writer = csv.writer(f)
                if write_header:
                    writer.writerow(self.FIELDS)
                for clip in new:
                    writer.writerow([split, epoch + 1, clip.index, clip.name, clip.reason])
                    log.warning("skipped a bad %s clip: %s", split, clip.reason)
        self.seen |= {(split, clip.index) for clip in new}
        if split == "train" and self.train_bad > self.max_fraction * self.num_train:
            raise UserError(f"{self.train_bad} of {self.num_train} training clips could not be read, more than "
                            f"train.max_bad_fraction={self.max_fraction:g}; they are listed in {self.path} "
                            "('tsnctl check LIST' finds them before training)", exit_code=1)

    def flush(self, epoch: int) -> None:
        """Several processes: gather every rank's training clips of the epoch, write and check them."""
        if dist.world_size() > 1:
            items, self.pending = dist.all_ranks(self.pending), []
            self.record("train", epoch, [clip for _, clip in items], gathered=True)


class StopRequest:
    """SIGINT/SIGTERM set ``signal_name`` instead of killing the process (inside ``with``)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.exit_code = 0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signal.signal works only there
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt  # a second signal: stop now, the last checkpoint stays as it was
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        log.warning("%s received: saving a checkpoint after this step, then stopping (again to stop now)",
                    self.signal_name)


def check_loss(loss: float, epoch: int, step: int, steps: int) -> None:
    """Stop before a NaN/inf loss reaches the weights; the last checkpoint written stays the good one."""
    if not math.isfinite(loss):
        raise UserError(f"training diverged: loss is {loss} at epoch {epoch + 1}, step {step}/{steps}; stopped "
                        "before updating the weights (the last checkpoint is kept); lower train.lr", exit_code=1)


def step_consensus(batch_size: int, stop: StopRequest | None) -> tuple[bool, bool]:
    """(every rank has clips in this batch, some rank was asked to stop): the same answer on every rank.

    One small all-reduce per micro-batch with several processes, so that a rank whose clips were all
    unreadable skips the step together with the others (DDP needs every rank in each backward pass).
    """
    empty, stopping = float(batch_size == 0), float(stop is not None and stop.requested)
    if dist.world_size() > 1:
        empty, stopping = dist.mean_over_ranks([empty, stopping])
    return empty == 0, stopping > 0


def stop_if_requested(stop: StopRequest, output_dir: Path, epoch: int, step: int) -> None:
    """Exit with ``128 + signal`` after the checkpoint was saved; ``epoch`` counts epochs begun (step > 0)
    or completed (step 0)."""
    name = stop.signal_name or "a signal to another process"
    where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
    raise UserError(f"stopped by {name} at {where}; saved {output_dir / 'last.pt'}; continue with "
                    "'tsnctl train ... --resume'", exit_code=stop.exit_code or 128 + signal.SIGTERM)
