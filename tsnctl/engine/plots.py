"""Training curves from a run folder's ``metrics.csv`` (and ``steps.csv``), drawn with matplotlib (Agg).

Left panel: loss against epoch; right panel: top-1 and top-5 against epoch; solid lines for train,
dashed for validation, one colour per run when several runs are overlaid.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tsnctl.errors import UserError


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` (``epoch, split, loss, top1, top5, lr``); [] if it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    required = {"epoch", "split", "loss", "top1", "top5"}
    if rows and not required <= set(rows[0]):
        raise UserError(f"{path}: not a tsnctl metrics.csv (columns {', '.join(sorted(required))} expected)")
    return rows


def write_curves(run_dir: str | Path) -> Path:
    """Draw ``RUN_DIR/curves.png`` for one run; returns its path."""
    run_dir = Path(run_dir)
    return plot_runs([run_dir], run_dir / "curves.png")


def plot_runs(run_dirs: list[str | Path], output: str | Path) -> Path:
    """Overlay the curves of several run folders in one figure written to ``output`` (PNG, PDF or SVG)."""
    runs = [(Path(d), _run_metrics(Path(d))) for d in run_dirs]
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, safe in threads and on servers
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for number, (run_dir, (rows, steps)) in enumerate(runs):
        prefix = f"{_label(run_dir, runs)} " if len(runs) > 1 else ""
        for split, style in (("train", "-"), ("valid", "--")):
            # one run: a colour per split; several: a colour per run, the line style tells the split
            color = colors[(number if len(runs) > 1 else split == "valid") % len(colors)]
            if split == "train" and steps:
                x = [int(s["epoch"]) - 1 + int(s["step"]) / int(s["steps"]) for s in steps]
                ax_loss.plot(x, [float(s["loss"]) for s in steps], color=color, alpha=0.25, linewidth=1,
                             label=f"{prefix}train (per interval)")
            part = [r for r in rows if r["split"] == split]
            if not part:
                continue
            epochs = [int(r["epoch"]) for r in part]
            ax_loss.plot(epochs, [float(r["loss"]) for r in part], style, color=color, marker="o",
                         markersize=4, label=f"{prefix}{split}")
            ax_acc.plot(epochs, [float(r["top1"]) for r in part], style, color=color, marker="o",
                        markersize=4, label=f"{prefix}{split} top-1")
            ax_acc.plot(epochs, [float(r["top5"]) for r in part], style, color=color, marker="^",
                        markersize=4, alpha=0.45, label=f"{prefix}{split} top-5")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="top-1 / top-5", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def _run_metrics(run_dir: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rows = read_metrics(run_dir / "metrics.csv")
    if not rows:
        raise UserError(f"{run_dir}: no metrics.csv with rows (is it a tsnctl train --output folder?)")
    steps_csv = run_dir / "steps.csv"
    if not steps_csv.is_file():
        return rows, []
    with open(steps_csv, newline="") as f:
        return rows, list(csv.DictReader(f))


def _label(run_dir: Path, runs: list) -> str:
    """The shortest name that tells the runs apart: the folder name, or the full path when names repeat."""
    names = [d.name for d, _ in runs]
    return run_dir.name if names.count(run_dir.name) == 1 else str(run_dir)
