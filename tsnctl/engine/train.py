"""Training: the reference optimiser and schedule, in plain loops you can step through.

SGD (momentum 0.9, weight decay on every parameter), gradients clipped to a global norm before the
step, learning rate multiplied by ``lr_gamma`` after each epoch in ``lr_steps`` (warm-up and the fc's lr
multiplier: ``engine/optim.py``). Writes ``last.pt`` every epoch and every ``checkpoint_steps`` optimizer
steps, ``best.pt`` when validation improves top-1, ``epoch_N.pt`` every ``save_interval`` epochs,
``metrics.csv``, ``bad_samples.csv`` and the resolved ``config.yaml`` in the output folder (``steps.csv``,
``curves.png`` and TensorBoard events come from ``runlog``). Resuming restores weights, optimiser,
schedule, RNGs and the position in the epoch's data order, so an interrupted run ends with the weights an
uninterrupted one would have.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tsnctl.config import Config, save_config
from tsnctl.data.splits import clip_settings
from tsnctl.engine import parallel
from tsnctl.engine import ranks as dist
from tsnctl.engine.evaluate import evaluate_all
from tsnctl.engine.finetune import BalancedSampler, class_weights, freeze
from tsnctl.engine.loaders import (
    class_names,
    clip_loader,
    model_input,
    read_split,
    resolve_decode_device,
    resolve_device,
    set_loader_epoch,
)
from tsnctl.engine.loss import Criterion
from tsnctl.engine.metrics import accuracy
from tsnctl.engine.optim import build_optimizer, build_scheduler, per_step
from tsnctl.engine.resume import newest_checkpoint, restore_rng, rng_state, trim_metrics, trim_steps
from tsnctl.engine.runlog import IntervalStats, RunLog
from tsnctl.engine.safety import BadSampleLog, StopRequest, check_loss, step_consensus, stop_if_requested
from tsnctl.errors import UserError
from tsnctl.models.tsm import set_num_segments
from tsnctl.models.tsn import TSN
from tsnctl.progress import ProgressFn, no_progress
from tsnctl.weights.checkpoint import load_checkpoint, save_checkpoint
from tsnctl.weights.init import build_model

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
class EpochPosition:
    """Where a run is inside an epoch: micro-batches done and the running sums behind the epoch's means."""

    step: int = 0
    sums: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "top1": 0.0, "top5": 0.0, "counted": 0})
    stop: bool = False  # some rank was asked to stop (agreed by all ranks at the last micro-batch)


@dataclass
class TrainResult:
    output_dir: Path
    epochs_run: int
    best_top1: float | None  # best validation top-1 (None without validation)
    last_val_top1: float | None
    step_losses: list[float]  # training loss of every step of this run, averaged over ranks


@dataclass
class _Run:
    """What a training run carries from epoch to epoch and into every checkpoint."""

    cfg: Config
    output_dir: Path
    model: TSN
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    names: list[str]
    criterion: Criterion
    best_top1: float | None = None
    global_step: int = 0

    def save(self, paths: list[Path], epoch: int, pos: EpochPosition) -> None:
        """Everything a resume needs; ``epoch`` counts completed epochs, ``step`` the micro-batches into the
        next. Called on every rank (each one's RNG state is kept); rank 0 writes."""
        rngs = dist.all_ranks([rng_state()])
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epoch,
                 "step": pos.step, "global_step": self.global_step, "epoch_sums": dict(pos.sums), "rng": rngs[0],
                 "rng_ranks": rngs, "config": self.cfg.to_dict(), "class_names": self.names,
                 "best_top1": self.best_top1}
        for path in paths if dist.is_main() else []:
            save_checkpoint(path, state)

    def after_step(self, epoch: int, pos: EpochPosition, stop: StopRequest) -> None:
        """After each optimizer step: a mid-epoch checkpoint every ``checkpoint_steps``, and stop signals."""
        self.global_step += 1
        if per_step(self.cfg.train):  # cosine: the lr of the next step (saved below with the rest)
            self.scheduler.step()
        stopping = stop.requested if dist.world_size() == 1 else pos.stop
        every = self.cfg.train.checkpoint_steps
        if stopping or (every and self.global_step % every == 0):
            self.save([self.output_dir / "last.pt"], epoch, pos)
            log.debug("saved last.pt at epoch %d step %d", epoch + 1, pos.step)
        if stopping:
            stop_if_requested(stop, self.output_dir, epoch, pos.step)


def train(cfg: Config, output_dir: str | Path, validate: bool = False, resume: bool | str | Path = False,
          progress: ProgressFn = no_progress) -> TrainResult:
    """Train a TSN as configured; returns where it wrote and the validation results.

    ``resume``: True continues from the newest checkpoint in ``output_dir``, a path from that file.
    In a process group (see ``tsnctl.engine.ranks``) every rank trains on its share of each global
    batch; only rank 0 logs, reports progress and writes files.
    """
    progress = dist.progress_or_silent(progress)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    train_labels, train_loader, val_loader = _loaders(cfg, device, validate)
    run = _new_run(cfg, output_dir, device, max(len(train_loader) // cfg.train.accumulate, 1), train_labels)
    start_epoch, position = _resume(run, resume) if resume else (0, EpochPosition())
    if dist.is_main():
        save_config(cfg, output_dir / "config.yaml")
    run_log = RunLog(output_dir) if dist.is_main() else None  # curves, steps.csv, TensorBoard: rank 0 only
    bad_log = BadSampleLog(output_dir / "bad_samples.csv", len(train_labels), cfg.train.max_bad_fraction,
                           resume=bool(resume))
    net = parallel.parallel_model(run.model, device, cfg.train)
    last_val_top1, step_losses, since_best, end_epoch = None, [], 0, cfg.train.epochs
    with StopRequest() as stop:
        for epoch in range(start_epoch, cfg.train.epochs):
            set_loader_epoch(train_loader, epoch, position.step)  # order fixed by (seed, epoch): resumable
            stats = train_one_epoch(net, train_loader, run.optimizer, device, epoch, cfg, progress, run.scaler,
                                    run_log, position, lambda pos, epoch=epoch: run.after_step(epoch, pos, stop),
                                    bad_log, stop, run.criterion)
            step_losses += stats.step_losses
            if not per_step(cfg.train):
                run.scheduler.step()
            position = EpochPosition()
            bad_log.flush(epoch)
            run.best_top1, last_val_top1, improved = _end_epoch(epoch, stats, run.model, val_loader, device, cfg,
                                                                output_dir, run.best_top1, bad_log, progress)
            periodic = cfg.train.save_interval > 0 and (epoch + 1) % cfg.train.save_interval == 0
            run.save([output_dir / "last.pt"] + [output_dir / "best.pt"] * improved
                     + [output_dir / f"epoch_{epoch + 1}.pt"] * periodic, epoch + 1, position)
            if run_log is not None:
                run_log.end_epoch(epoch + 1)
            if step_consensus(1, stop)[1]:
                stop_if_requested(stop, output_dir, epoch + 1, 0)
            since_best = 0 if improved else since_best + 1
            if val_loader is not None and 0 < cfg.train.early_stop_patience <= since_best:
                log.info("early stop: no better validation top-1 for %d epochs", since_best)
                end_epoch = epoch + 1
                break
    if run_log is not None:
        run_log.close()
    return TrainResult(output_dir, end_epoch - start_epoch, run.best_top1, last_val_top1, step_losses)


def _loaders(cfg: Config, device: torch.device, validate: bool) -> tuple[list[int], Any, Any]:
    """The labels of the training clips, their loader (checked: one global batch, fits shared memory), the valid one."""
    train_samples = read_split(cfg, cfg.data.train_list, "train")
    global_batch = cfg.train.batch_size * dist.world_size() * cfg.train.accumulate
    if len(train_samples) < global_batch:
        raise UserError(f"{cfg.data.train_list}: {len(train_samples)} clips, fewer than one batch "
                        f"(train.batch_size={cfg.train.batch_size} x {dist.world_size()} process(es) x "
                        f"accumulate {cfg.train.accumulate})")
    parallel.check_shared_memory(cfg.data.num_workers, cfg.train.batch_size, cfg.train.num_seg, cfg.data.crop_size,
                                 dist.local_world_size())
    decode_on = resolve_decode_device(cfg.data.decode_device, device)
    labels = [sample.label for sample in train_samples]
    seed = cfg.train.seed * 100_003
    balanced = (BalancedSampler(labels, dist.rank(), dist.world_size(), seed)
                if cfg.train.sampler == "balanced" else None)
    train_loader = clip_loader(train_samples, clip_settings(cfg, "train"), cfg.train.batch_size,
                               cfg.data.num_workers, shuffle=True, seed=seed, decode_device=decode_on,
                               sampler=balanced)
    val_loader = None
    if validate:
        val_samples = read_split(cfg, cfg.data.val_list, "val")
        val_loader = clip_loader(val_samples, clip_settings(cfg, "valid"), cfg.valid.batch_size,
                                 cfg.data.num_workers, decode_device=decode_on)
    return labels, train_loader, val_loader


def _new_run(cfg: Config, output_dir: Path, device: torch.device, steps_per_epoch: int,
             train_labels: list[int]) -> _Run:
    """The model on its device (frozen parts fixed), its optimizer, lr schedule (``steps_per_epoch`` optimizer
    steps), loss scaler and training loss (class weights from ``train_labels``)."""
    names = class_names(cfg)
    model = parallel.prepare_model(build_model(cfg.model, names if cfg.data.label_file else None), device, cfg.train)
    freeze(model, cfg.model.freeze_stages, cfg.model.partial_bn)  # after SyncBatchNorm: it would replace frozen BNs
    if dist.world_size() > 1:  # the same initial weights everywhere, but a different dropout mask per rank
        torch.manual_seed(cfg.train.seed + dist.rank())
    optimizer = build_optimizer(model, cfg.train, parallel.scaled_lr(cfg.train))
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    weight = class_weights(train_labels, cfg.model.num_classes) if cfg.train.class_weights == "auto" else None
    if weight is not None:
        log.info("class weights: %s", " ".join(f"{w:.3g}" for w in weight.tolist()))
    criterion = Criterion(cfg.train, cfg.model.num_classes, weight, dist.rank())
    return _Run(cfg, output_dir, model, optimizer, scheduler, scaler, names, criterion)


def _end_epoch(epoch: int, stats: EpochStats, model: TSN, val_loader, device: torch.device, cfg: Config,
               output_dir: Path, best_top1: float | None, bad_log: BadSampleLog,
               progress: ProgressFn) -> tuple[float | None, float | None, bool]:
    """Log the epoch and validate (on every rank); returns (best top-1, this epoch's top-1, improved)."""
    log.info("epoch %d/%d train: loss %.4f top1 %.2f top5 %.2f lr %.5f (data %.1fs, step %.1fs)",
             epoch + 1, cfg.train.epochs, stats.loss, stats.top1, stats.top5, stats.lr,
             stats.data_time, stats.step_time)
    if dist.is_main():
        _append_metrics(output_dir / "metrics.csv", epoch + 1, "train", stats.loss, stats.top1, stats.top5,
                        stats.lr)
    if val_loader is None:
        return best_top1, None, False
    logits, labels, bad = evaluate_all(model, val_loader, device, progress, f"valid {epoch + 1}")
    bad_log.record("val", epoch, bad, gathered=True)
    if not len(labels):
        raise UserError(f"{cfg.data.val_list}: no validation clip could be read (see {bad_log.path})", exit_code=1)
    val_loss = nn.functional.cross_entropy(logits, labels).item()
    top1, top5 = accuracy(logits, labels, 1), accuracy(logits, labels, 5)
    improved = best_top1 is None or top1 > best_top1
    best_top1 = top1 if improved else best_top1
    log.info("epoch %d/%d valid: loss %.4f top1 %.2f top5 %.2f (best %.2f)", epoch + 1,
             cfg.train.epochs, val_loss, top1, top5, best_top1)
    if dist.is_main():
        _append_metrics(output_dir / "metrics.csv", epoch + 1, "valid", val_loss, top1, top5, stats.lr)
    return best_top1, top1, improved


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, device: torch.device, epoch: int,
                    cfg: Config, progress: ProgressFn = no_progress, scaler: torch.amp.GradScaler | None = None,
                    run_log: RunLog | None = None, position: EpochPosition | None = None,
                    after_step: Callable[[EpochPosition], None] | None = None,
                    bad_log: BadSampleLog | None = None, stop: StopRequest | None = None,
                    criterion: Criterion | None = None) -> EpochStats:
    """One pass over the training loader; returns the epoch's mean loss and accuracies (over all ranks).

    ``model`` may be DDP-wrapped. Every ``train.accumulate`` micro-batches make one optimizer step, each
    contributing ``loss / accumulate``: the gradient of the mean loss over the combined batch.
    ``position`` carries the micro-batches already done (a resumed epoch: the loader starts after them)
    and their sums; ``after_step`` runs after every optimizer step (checkpoints, stop signals). Unreadable
    clips are left out of their batch and recorded in ``bad_log``; a batch with none left is skipped (on
    every rank, when any rank's share is empty), never refilled. ``criterion``: the loss after mixup/cutmix
    (default: from ``cfg.train``, no class weights).
    """
    model.train()
    criterion = criterion or Criterion(cfg.train, cfg.model.num_classes)
    set_num_segments(model, loader.dataset.settings.num_seg)  # the clip length of a temporal shift
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    pos = position or EpochPosition()
    sums = pos.sums
    accumulate = cfg.train.accumulate
    # a trailing incomplete accumulation group is skipped
    total = (pos.step + len(loader)) // accumulate * accumulate
    step_losses: list[float] = []
    data_time = step_time = 0.0
    lr = optimizer.param_groups[0]["lr"]
    tick = time.perf_counter()
    for step, (clips, labels, bad) in enumerate(loader, start=pos.step + 1):
        if step > total:
            break
        if bad and bad_log is not None:
            bad_log.record("train", epoch, bad)
        started = time.perf_counter()
        data_time += started - tick
        ends_group = step % accumulate == 0
        has_clips, pos.stop = step_consensus(len(labels), stop)
        if has_clips:
            values = _forward_backward(model, scaler, model_input(clips, device),
                                       labels.to(device, non_blocking=True), cfg, ends_group, epoch, step, total,
                                       criterion)
            step_losses.append(values[0])
            for key, value in zip(("loss", "top1", "top5"), values, strict=True):
                sums[key] += value
            sums["counted"] += 1
        if ends_group:
            _optimizer_step(model, optimizer, scaler, cfg.train.clip_grad_norm)
        tick = time.perf_counter()
        step_time += tick - started
        pos.step = step
        _report_step(sums, epoch, step, total, lr, data_time, step_time, cfg, progress, run_log)
        if ends_group and after_step is not None:
            after_step(pos)
    counted = max(sums["counted"], 1)
    return EpochStats(sums["loss"] / counted, sums["top1"] / counted, sums["top5"] / counted, lr, data_time,
                      step_time, step_losses)


def _report_step(sums: dict[str, float], epoch: int, step: int, total: int, lr: float, data_time: float,
                 step_time: float, cfg: Config, progress: ProgressFn, run_log: RunLog | None) -> None:
    """The progress bar after every micro-batch; the log and the run log every ``log_interval``."""
    counted = max(sums["counted"], 1)
    status = (f"loss {sums['loss'] / counted:.3f} top1 {sums['top1'] / counted:.1f} lr {lr:.4g} "
              f"data/step {data_time:.1f}s/{step_time:.1f}s")
    progress(f"train {epoch + 1}/{cfg.train.epochs}", step, total, status)
    if step % cfg.train.log_interval == 0:
        log.info("epoch %d step %d/%d: loss %.4f top1 %.2f top5 %.2f lr %.5f", epoch + 1, step, total,
                 sums["loss"] / counted, sums["top1"] / counted, sums["top5"] / counted, lr)
        if run_log is not None:
            run_log.interval(IntervalStats(epoch + 1, step, total, sums["loss"] / counted,
                                           sums["top1"] / counted, sums["top5"] / counted, lr, data_time,
                                           step_time))


def _forward_backward(model: nn.Module, scaler: torch.amp.GradScaler, clips: torch.Tensor, labels: torch.Tensor,
                      cfg: Config, ends_group: bool, epoch: int, step: int, total: int,
                      criterion: Criterion) -> list[float]:
    """One micro-batch: loss and accuracies (against the unmixed labels) averaged over ranks, checked finite
    before any gradient."""
    clips, targets = criterion.mix(clips, labels, epoch, step)
    with parallel.no_sync_unless(model, ends_group):
        with parallel.autocast(device=clips.device, amp=cfg.train.amp):
            logits = model(clips).float()
        loss = criterion(logits, targets)
        # Averaged before backward, so every rank sees a NaN on any rank and all stop at the same step.
        values = dist.mean_over_ranks([loss.item(), accuracy(logits.detach(), labels, 1),
                                       accuracy(logits.detach(), labels, 5)])
        check_loss(values[0], epoch, step, total)
        scaler.scale(loss / cfg.train.accumulate).backward()
    return values


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    clip_grad_norm: float) -> None:
    if all(p.grad is None for group in optimizer.param_groups for p in group["params"]):
        return  # every micro-batch of the group was unreadable
    if clip_grad_norm > 0:
        # Clip first; SGD adds weight decay to the clipped gradient (the reference's order).
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _resume(run: _Run, resume: bool | str | Path) -> tuple[int, EpochPosition]:
    """Load a checkpoint into the run; returns (epochs done, position in the epoch)."""
    path = newest_checkpoint(run.output_dir) if resume is True else Path(resume)
    state = load_checkpoint(path)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler.is_enabled() and state.get("scaler"):  # fp16: the loss scale reached so far
        run.scaler.load_state_dict(state["scaler"])
    ranks = state.get("rng_ranks") or []
    if len(ranks) == dist.world_size():  # each rank continues its own dropout stream
        restore_rng(ranks[dist.rank()])
    elif "rng" in state and dist.world_size() == 1:
        restore_rng(state["rng"])
    position = EpochPosition(int(state.get("step", 0)), dict(state.get("epoch_sums") or EpochPosition().sums))
    start_epoch = int(state["epoch"])
    run.best_top1, run.global_step = state.get("best_top1"), int(state.get("global_step", 0))
    if dist.is_main():
        trim_metrics(run.output_dir / "metrics.csv", start_epoch)
        trim_steps(run.output_dir / "steps.csv", start_epoch, position.step)
    log.info("resumed from %s at epoch %d, step %d", path, start_epoch + 1, position.step)
    return start_epoch, position


def _append_metrics(path: Path, epoch: int, split: str, loss: float, top1: float, top5: float, lr: float) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["epoch", "split", "loss", "top1", "top5", "lr"])
        writer.writerow([epoch, split, f"{loss:.6f}", f"{top1:.4f}", f"{top5:.4f}", f"{lr:.8g}"])
