"""Training: the reference optimiser and schedule, in plain loops you can step through.

SGD (momentum 0.9, weight decay on every parameter), gradients clipped to a global norm before the
step, learning rate multiplied by ``lr_gamma`` after each epoch in ``lr_steps`` (warm-up and the fc's lr
multiplier: ``engine/optim.py``). Writes ``last.pt`` every epoch, ``best.pt`` when validation improves
top-1, ``epoch_N.pt`` every ``save_interval`` epochs, and ``metrics.csv`` and the resolved ``config.yaml``
in the output folder (``steps.csv``, ``curves.png`` and TensorBoard events come from ``runlog``).
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tsnctl.config import Config, save_config
from tsnctl.data.dataset import ClipSettings
from tsnctl.engine import distributed as dist
from tsnctl.engine.checkpoint import load_checkpoint, save_checkpoint
from tsnctl.engine.evaluate import evaluate_all
from tsnctl.engine.loaders import class_names, clip_loader, model_input, read_split, resolve_device, set_loader_epoch
from tsnctl.engine.metrics import accuracy
from tsnctl.engine.optim import build_optimizer, build_scheduler
from tsnctl.engine.runlog import IntervalStats, RunLog
from tsnctl.errors import UserError
from tsnctl.models.tsm import set_num_segments
from tsnctl.models.tsn import TSN, build_model
from tsnctl.progress import ProgressFn, no_progress

log = logging.getLogger("tsnctl")


@dataclass
class EpochStats:
    loss: float
    top1: float
    top5: float
    lr: float
    data_time: float  # seconds spent waiting for batches
    step_time: float  # seconds spent in forward, backward and step
    step_losses: list[float]  # loss of every micro-batch, averaged over ranks


@dataclass
class TrainResult:
    output_dir: Path
    epochs_run: int
    best_top1: float | None  # best validation top-1 (None without validation)
    last_val_top1: float | None
    step_losses: list[float]  # training loss of every step of this run, averaged over ranks


def train(cfg: Config, output_dir: str | Path, validate: bool = False, resume: bool = False,
          progress: ProgressFn = no_progress) -> TrainResult:
    """Train a TSN as configured; returns where it wrote and the validation results.

    In a process group (see ``tsnctl.engine.distributed``) every rank trains on its share of each global
    batch; only rank 0 logs, reports progress and writes files.
    """
    progress = dist.progress_or_silent(progress)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    names = class_names(cfg)
    torch.manual_seed(cfg.train.seed)

    train_samples = read_split(cfg, cfg.data.train_list, "train")
    global_batch = cfg.train.batch_size * dist.world_size() * cfg.train.accumulate
    if len(train_samples) < global_batch:
        raise UserError(f"{cfg.data.train_list}: {len(train_samples)} clips, fewer than one batch "
                        f"(train.batch_size={cfg.train.batch_size} x {dist.world_size()} process(es) x "
                        f"accumulate {cfg.train.accumulate})")
    dist.check_shared_memory(cfg.data.num_workers, cfg.train.batch_size, cfg.train.num_seg, cfg.data.crop_size,
                             dist.local_world_size())
    train_loader = clip_loader(
        train_samples,
        ClipSettings(cfg.data.format, cfg.train.num_seg, cfg.data.short_side, cfg.data.crop_size, mode="train",
                     image_template=cfg.data.image_template, seed=cfg.train.seed),
        cfg.train.batch_size, cfg.data.num_workers, shuffle=True, seed=cfg.train.seed * 100_003)
    val_loader = None
    if validate:
        val_samples = read_split(cfg, cfg.data.val_list, "val")
        val_loader = clip_loader(
            val_samples,
            ClipSettings(cfg.data.format, cfg.valid.num_seg, cfg.data.short_side, cfg.data.crop_size,
                         crop="center", image_template=cfg.data.image_template),
            cfg.valid.batch_size, cfg.data.num_workers)

    model = dist.prepare_model(build_model(cfg.model), device, cfg.train)
    if dist.world_size() > 1:  # the same initial weights everywhere, but a different dropout mask per rank
        torch.manual_seed(cfg.train.seed + dist.rank())
    optimizer = build_optimizer(model, cfg.train, dist.scaled_lr(cfg.train))
    scheduler = build_scheduler(optimizer, cfg.train)
    start_epoch, best_top1 = 0, None
    if resume:
        start_epoch, best_top1 = _resume(output_dir / "last.pt", model, optimizer, scheduler)
        log.info("resumed from %s after epoch %d", output_dir / "last.pt", start_epoch)
    if dist.is_main():
        save_config(cfg, output_dir / "config.yaml")
    run_log = RunLog(output_dir) if dist.is_main() else None  # curves, steps.csv, TensorBoard: rank 0 only
    net = dist.parallel_model(model, device, cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")

    last_val_top1, step_losses = None, []
    for epoch in range(start_epoch, cfg.train.epochs):
        set_loader_epoch(train_loader, epoch)  # the order depends on (seed, epoch) only: the same on resume
        stats = train_one_epoch(net, train_loader, optimizer, device, epoch, cfg, progress, scaler, run_log)
        step_losses += stats.step_losses
        scheduler.step()
        log.info("epoch %d/%d train: loss %.4f top1 %.2f top5 %.2f lr %.5f (data %.1fs, step %.1fs)",
                 epoch + 1, cfg.train.epochs, stats.loss, stats.top1, stats.top5, stats.lr,
                 stats.data_time, stats.step_time)
        if dist.is_main():
            _append_metrics(output_dir / "metrics.csv", epoch + 1, "train", stats.loss, stats.top1, stats.top5,
                            stats.lr)
        improved = False
        if val_loader is not None:
            logits, labels = evaluate_all(model, val_loader, device, progress, f"valid {epoch + 1}")
            val_loss = nn.functional.cross_entropy(logits, labels).item()
            last_val_top1 = accuracy(logits, labels, 1)
            val_top5 = accuracy(logits, labels, 5)
            improved = best_top1 is None or last_val_top1 > best_top1
            best_top1 = last_val_top1 if improved else best_top1
            log.info("epoch %d/%d valid: loss %.4f top1 %.2f top5 %.2f (best %.2f)", epoch + 1,
                     cfg.train.epochs, val_loss, last_val_top1, val_top5, best_top1)
            if dist.is_main():
                _append_metrics(output_dir / "metrics.csv", epoch + 1, "valid", val_loss, last_val_top1, val_top5,
                                stats.lr)
        if not dist.is_main():
            continue
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "config": cfg.to_dict(),
                 "class_names": names, "best_top1": best_top1}
        save_checkpoint(output_dir / "last.pt", state)
        if improved:
            save_checkpoint(output_dir / "best.pt", state)
        if cfg.train.save_interval > 0 and (epoch + 1) % cfg.train.save_interval == 0:
            save_checkpoint(output_dir / f"epoch_{epoch + 1}.pt", state)
        if run_log is not None:
            run_log.end_epoch(epoch + 1)
    if run_log is not None:
        run_log.close()
    return TrainResult(output_dir, cfg.train.epochs - start_epoch, best_top1, last_val_top1, step_losses)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device, epoch: int,
                    cfg: Config, progress: ProgressFn = no_progress, scaler: torch.amp.GradScaler | None = None,
                    run_log: RunLog | None = None) -> EpochStats:
    """One pass over the training loader; returns the epoch's mean loss and accuracies (over all ranks).

    ``model`` may be DDP-wrapped. Every ``train.accumulate`` micro-batches make one optimizer step, each
    contributing ``loss / accumulate``: the gradient of the mean loss over the combined batch.
    """
    model.train()
    set_num_segments(model, loader.dataset.settings.num_seg)  # the clip length of a temporal shift
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    accumulate = cfg.train.accumulate
    total = len(loader) // accumulate * accumulate  # a trailing incomplete accumulation group is skipped
    sums = {"loss": 0.0, "top1": 0.0, "top5": 0.0}
    step_losses: list[float] = []
    data_time = step_time = 0.0
    lr = optimizer.param_groups[0]["lr"]
    tick = time.perf_counter()
    for step, (clips, labels) in enumerate(loader, start=1):
        if step > total:
            break
        clips, labels = model_input(clips, device), labels.to(device, non_blocking=True)
        started = time.perf_counter()
        data_time += started - tick
        ends_group = step % accumulate == 0
        with dist.no_sync_unless(model, ends_group):
            with dist.autocast(device, cfg.train.amp):
                logits = model(clips).float()
            loss = nn.functional.cross_entropy(logits, labels)
            scaler.scale(loss / accumulate).backward()
        if ends_group:
            if cfg.train.clip_grad_norm > 0:
                # Clip first; SGD adds weight decay to the clipped gradient (the reference's order).
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        tick = time.perf_counter()
        step_time += tick - started
        values = dist.mean_over_ranks([loss.item(), accuracy(logits.detach(), labels, 1),
                                       accuracy(logits.detach(), labels, 5)])
        step_losses.append(values[0])
        for key, value in zip(sums, values, strict=True):
            sums[key] += value
        status = (f"loss {sums['loss'] / step:.3f} top1 {sums['top1'] / step:.1f} lr {lr:.4g} "
                  f"data/step {data_time:.1f}s/{step_time:.1f}s")
        progress(f"train {epoch + 1}/{cfg.train.epochs}", step, total, status)
        if step % cfg.train.log_interval == 0:
            log.info("epoch %d step %d/%d: loss %.4f top1 %.2f top5 %.2f lr %.5f", epoch + 1, step, total,
                     sums["loss"] / step, sums["top1"] / step, sums["top5"] / step, lr)
            if run_log is not None:
                run_log.interval(IntervalStats(epoch + 1, step, total, sums["loss"] / step, sums["top1"] / step,
                                               sums["top5"] / step, lr, data_time, step_time))
    if not torch.isfinite(torch.tensor(sums["loss"])):
        raise UserError(f"training diverged in epoch {epoch + 1} (loss is not finite); lower train.lr",
                        exit_code=1)
    return EpochStats(sums["loss"] / total, sums["top1"] / total, sums["top5"] / total, lr, data_time, step_time,
                      step_losses)


def _resume(path: Path, model: TSN, optimizer, scheduler) -> tuple[int, float | None]:
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]), state.get("best_top1")


def _append_metrics(path: Path, epoch: int, split: str, loss: float, top1: float, top5: float, lr: float) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["epoch", "split", "loss", "top1", "top5", "lr"])
        writer.writerow([epoch, split, f"{loss:.6f}", f"{top1:.4f}", f"{top5:.4f}", f"{lr:.8g}"])
