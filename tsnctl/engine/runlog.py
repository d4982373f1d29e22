"""What a training run leaves next to its checkpoints besides ``metrics.csv``.

``steps.csv`` gets one row every ``train.log_interval`` steps (running means over the epoch so far, as
in the log line, plus the seconds spent waiting for data and computing); TensorBoard event files are
written to ``tensorboard/`` when the ``tensorboard`` package is installed; ``curves.png`` is redrawn
from ``metrics.csv`` and ``steps.csv`` at the end of every epoch.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from tsnctl.engine.plots import read_metrics, write_curves

log = logging.getLogger("tsnctl")


@dataclass
class IntervalStats:
    epoch: int  # 1-based
    step: int  # 1-based step within the epoch
    steps: int  # steps in the epoch
    loss: float
    top1: float
    top5: float
    lr: float
    data_time: float  # seconds waiting for batches since the epoch started
    step_time: float  # seconds in forward, backward and step since the epoch started


class RunLog:
    """Appends interval rows and mirrors every metric to TensorBoard when it is available."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.steps_csv = self.output_dir / "steps.csv"
        self._writer = _tensorboard_writer(self.output_dir / "tensorboard")

    def interval(self, stats: IntervalStats) -> None:
        """Record one interval of training (called every ``train.log_interval`` steps)."""
        new = not self.steps_csv.exists()
        with open(self.steps_csv, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow([f.name for f in fields(IntervalStats)])
            writer.writerow([_fmt(v) for v in astuple(stats)])
        if self._writer is not None:
            global_step = (stats.epoch - 1) * stats.steps + stats.step
            for name in ("loss", "top1", "top5", "lr"):
                self._writer.add_scalar(f"train_steps/{name}", getattr(stats, name), global_step)

    def end_epoch(self, epoch: int) -> None:
        """Mirror the epoch's rows of ``metrics.csv`` to TensorBoard and redraw ``curves.png``."""
        rows = [r for r in read_metrics(self.output_dir / "metrics.csv") if int(r["epoch"]) == epoch]
        if self._writer is not None:
            for row in rows:
                for name in ("loss", "top1", "top5", "lr"):
                    self._writer.add_scalar(f"{row['split']}/{name}", float(row[name]), epoch)
            self._writer.flush()
        write_curves(self.output_dir)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the optional `tensorboard` package
        log.info("tensorboard is not installed: no event files (pip install tensorboard to get them)")
        return None
    return SummaryWriter(str(folder))


def _fmt(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
