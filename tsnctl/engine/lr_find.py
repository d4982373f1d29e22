"""Learning-rate range test (Smith 2015; the finders of fastai and PyTorch Lightning).

Trains a fresh model for ``steps`` optimizer steps while the lr grows geometrically from ``min_lr`` to
``max_lr``, records the loss of every step, smooths it (exponential moving average with bias correction)
and stops once the smoothed loss exceeds ``4 x`` its minimum (diverged). The suggestion is the lr where the
smoothed loss falls fastest against log(lr) before its lowest point, as Lightning suggests; a peak lr a
little below the valley, which is where that point lies, trains fast without the oscillation of the
divergent edge. The model is
thrown away: the test only reads the loss landscape of the configured recipe (optimizer, batch, data).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tsnctl.config import Config
from tsnctl.data.splits import clip_settings
from tsnctl.engine.loaders import clip_loader, model_input, read_split, resolve_device, set_loader_epoch
from tsnctl.engine.optim import build_optimizer
from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress
from tsnctl.weights.init import build_model


@dataclass
class LrFindResult:
    lrs: list[float]
    losses: list[float]  # raw loss of each step
    smoothed: list[float]
    suggested_lr: float
    csv_path: Path
    plot_path: Path


def smooth(losses: list[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average (fastai's)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** i))
    return out


def suggest(lrs: list[float], smoothed: list[float], skip: int = 3) -> float:
    """The lr where the smoothed loss falls fastest against log(lr), ignoring the first ``skip`` points
    (start-up) and everything after the lowest smoothed loss: a fall after the loss has risen is noise on
    the way to divergence, and on a flat curve it would otherwise be the steepest."""
    if len(lrs) < 2 * skip + 3:
        raise UserError(f"lr-find: only {len(lrs)} steps before the loss diverged; lower --min-lr or "
                        "raise --steps", exit_code=1)
    slope = np.gradient(np.asarray(smoothed), np.log(np.asarray(lrs)))
    end = max(int(np.argmin(smoothed)), 2 * skip + 1)
    window = slope[skip:end]
    return float(lrs[skip + int(np.argmin(window))])


def lr_find(cfg: Config, output_dir: str | Path, min_lr: float = 1e-5, max_lr: float = 1.0, steps: int = 100,
            progress: ProgressFn = no_progress) -> LrFindResult:
    """Run the range test with the training data and recipe of ``cfg``; writes ``lr_find.csv`` and
    ``lr_find.png`` into ``output_dir``."""
    if not 0 < min_lr < max_lr or steps < 10:
        raise UserError("lr-find: need 0 < --min-lr < --max-lr and --steps >= 10")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    samples = read_split(cfg, cfg.data.train_list, "train")
    loader = clip_loader(samples, clip_settings(cfg, "train"), cfg.train.batch_size, cfg.data.num_workers,
                         shuffle=True, seed=cfg.train.seed * 100_003)
    model = build_model(cfg.model).to(device).train()
    optimizer = build_optimizer(model, cfg.train, min_lr)
    ratio = (max_lr / min_lr) ** (1.0 / (steps - 1))
    lrs, losses, best, epoch = [], [], math.inf, 0
    while len(lrs) < steps:
        set_loader_epoch(loader, epoch, 0)
        for clips, labels, _ in loader:
            if len(lrs) >= steps or not len(labels):
                break
            lr = min_lr * ratio ** len(lrs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = nn.functional.cross_entropy(model(model_input(clips, device)), labels.to(device),
                                               label_smoothing=cfg.train.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.clip_grad_norm > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            optimizer.step()
            lrs.append(lr)
            losses.append(loss.item())
            progress("lr-find", len(lrs), steps, f"lr {lr:.2e} loss {losses[-1]:.3f}")
            current = smooth(losses)[-1]
            best = min(best, current)
            if not math.isfinite(current) or current > 4 * best:
                steps = len(lrs)  # diverged: the rest of the range says nothing
                break
        epoch += 1
    smoothed = smooth(losses)
    suggested = suggest(lrs, smoothed)
    csv_path, plot_path = output_dir / "lr_find.csv", output_dir / "lr_find.png"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        rows = enumerate(zip(lrs, losses, smoothed, strict=True))
        writer.writerows([i, f"{a:.6g}", f"{b:.6f}", f"{c:.6f}"] for i, (a, b, c) in rows)
    _plot(lrs, losses, smoothed, suggested, plot_path)
    return LrFindResult(lrs, losses, smoothed, suggested, csv_path, plot_path)


def _plot(lrs: list[float], losses: list[float], smoothed: list[float], suggested: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses, color="0.75", label="loss")
    ax.plot(lrs, smoothed, color="C0", label="smoothed")
    ax.axvline(suggested, color="C3", linestyle="--", label=f"suggested {suggested:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
