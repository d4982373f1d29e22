"""The test report: per-class accuracy, the confusion matrix and the most confused class pairs.

Fed with the ``TestResult`` of ``engine.evaluate.run_test`` (video-level logits ``[N, C]`` and labels
``[N]``). Writes into one folder: ``per_class.csv``, ``confused_pairs.csv``, ``confusion.png`` and
``metrics.json``. The matrix stays readable with 400 classes: rows are normalised per true class,
rows and columns are sorted by class accuracy (worst first), and the colour scale is a square root so
that small confusions still show.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tsnctl.engine.evaluate import TestResult
from tsnctl.engine.metrics import topk_correct
from tsnctl.errors import UserError

MAX_TICK_LABELS = 60  # above this many classes the axes carry no names (see per_class.csv)
MAX_CELL_LABELS = 20  # up to this many classes each non-zero cell shows its percentage


@dataclass
class ClassScore:
    index: int
    name: str
    support: int  # test videos of this class
    top1: float  # percent; nan when support is 0
    top5: float
    confused_with: str  # the class most often predicted instead ("" when never wrong)


@dataclass
class ConfusedPair:
    true_index: int
    true_name: str
    predicted_index: int
    predicted_name: str
    count: int
    share: float  # percent of the true class's videos predicted as this class


@dataclass
class TestReport:
    folder: Path
    classes: list[ClassScore]  # in class-index order
    pairs: list[ConfusedPair]  # most frequent first; every off-diagonal cell with a count > 0


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``[C, C]``: row = true class, column = top-1 prediction."""
    predicted = logits.argmax(dim=1)
    flat = labels.long() * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def build_report(result: TestResult, class_names: list[str], folder: str | Path) -> TestReport:
    """Score every class and pair; ``class_names`` must have one name per logit column."""
    num_classes = result.logits.shape[1]
    if len(class_names) != num_classes:
        raise UserError(f"{len(class_names)} class names for a model with {num_classes} classes")
    matrix = confusion_matrix(result.logits, result.labels, num_classes)
    top5 = topk_correct(result.logits, result.labels, 5)
    classes = []
    for c in range(num_classes):
        row = matrix[c]
        support = int(row.sum())
        wrong = row.clone()
        wrong[c] = 0
        member = result.labels == c
        classes.append(ClassScore(
            c, class_names[c], support,
            100.0 * int(row[c]) / support if support else float("nan"),
            100.0 * top5[member].float().mean().item() if support else float("nan"),
            class_names[int(wrong.argmax())] if int(wrong.sum()) else ""))
    off_diagonal = matrix.clone()
    off_diagonal.fill_diagonal_(0)
    pairs = [ConfusedPair(t, class_names[t], p, class_names[p], int(matrix[t, p]),
                          100.0 * int(matrix[t, p]) / int(matrix[t].sum()))
             for t, p in off_diagonal.nonzero().tolist()]
    pairs.sort(key=lambda pair: (-pair.count, -pair.share, pair.true_index, pair.predicted_index))
    return TestReport(Path(folder), classes, pairs)


def write_report(result: TestResult, class_names: list[str], folder: str | Path) -> TestReport:
    """Build the report and write its four files into ``folder`` (created if needed)."""
    report = build_report(result, class_names, folder)
    try:
        _write_files(report, result)
    except OSError as exc:
        raise UserError(f"{exc.filename or report.folder}: cannot write the test report ({exc.strerror}); "
                        "choose another folder with --report-dir", exit_code=1) from None
    return report


def _write_files(report: TestReport, result: TestResult) -> None:
    report.folder.mkdir(parents=True, exist_ok=True)
    with open(report.folder / "per_class.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "class", "support", "top1", "top5", "most_confused_with"])
        for c in report.classes:
            writer.writerow([c.index, c.name, c.support, f"{c.top1:.2f}", f"{c.top5:.2f}", c.confused_with])
    with open(report.folder / "confused_pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true_index", "true_class", "predicted_index", "predicted_class", "count", "share"])
        for p in report.pairs:
            writer.writerow([p.true_index, p.true_name, p.predicted_index, p.predicted_name, p.count,
                             f"{p.share:.2f}"])
    (report.folder / "metrics.json").write_text(json.dumps(summary(result), indent=2) + "\n")
    draw_confusion(confusion_matrix(result.logits, result.labels, len(report.classes)), report,
                   report.folder / "confusion.png")


def summary(result: TestResult) -> dict:
    """The headline numbers as a JSON-ready dict: the one schema of every ``metrics.json``."""
    return {"top1": result.top1, "top5": result.top5, "mean_class_accuracy": result.mean_class,
            "videos": result.num_videos, "protocol": result.protocol, "listed": result.num_listed,
            "excluded": [{"path": c.name, "reason": c.reason} for c in result.excluded]}


def class_order(report: TestReport) -> list[int]:
    """Class indices sorted by top-1 (worst first, classes without test videos last), then by index."""
    return sorted(range(len(report.classes)), key=lambda c: (report.classes[c].support == 0,
                                                             report.classes[c].top1, c))


def draw_confusion(matrix: torch.Tensor, report: TestReport, output: Path) -> None:
    """The row-normalised confusion matrix, rows and columns in ``class_order``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    order = class_order(report)
    counts = matrix[order][:, order].double()
    rates = (100.0 * counts / counts.sum(dim=1, keepdim=True).clamp(min=1)).numpy()
    num_classes = len(order)
    side = min(max(6.0, 0.22 * num_classes + 2), 30.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(rates, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=100), interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, label="% of the true class (sqrt scale)")
    names_hint = ""
    if num_classes <= MAX_TICK_LABELS:
        names = [report.classes[c].name for c in order]
        ax.set_xticks(range(num_classes), names, rotation=90, fontsize=7)
        ax.set_yticks(range(num_classes), names, fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        names_hint = " (names: per_class.csv)"
    if num_classes <= MAX_CELL_LABELS:
        for (row, col), rate in np.ndenumerate(rates):
            if rate > 0:
                ax.text(col, row, f"{rate:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if rate > 50 else "white")
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"confusion (% of true class): {num_classes} classes sorted by top-1, worst first{names_hint}")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
