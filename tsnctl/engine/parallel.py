"""Model wrapping for training: SyncBatchNorm, channels_last, compile, DDP, autocast, the scaled lr.

Next to the training loop that uses them; ``engine/ranks.py`` keeps only process groups and collectives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from typing import Any

import torch

from tsnctl.data.batch_buffers import SLOTS
from tsnctl.engine.ranks import world_size
from tsnctl.errors import UserError

log = logging.getLogger("tsnctl")

REFERENCE_GLOBAL_BATCH = 256  # 8 GPUs x 32 clips: the batch the reference's lr 0.01 belongs to


def prepare_model(model: torch.nn.Module, device: torch.device, train_cfg: Any) -> torch.nn.Module:
    """SyncBatchNorm (several processes with ``sync_bn``), channels_last, moved to ``device``.

    Returns the module that owns the weights: optimizers and checkpoints use it, never the wrapper.
    """
    if train_cfg.sync_bn and world_size() > 1:
        if device.type != "cuda":
            raise UserError("train.sync_bn needs CUDA GPUs (SyncBatchNorm has no CPU kernel); set it to false")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if train_cfg.amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs a CUDA GPU (fp16 autocast with a GradScaler); use bf16 on CPU")
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if train_cfg.channels_last else model


def parallel_model(model: torch.nn.Module, device: torch.device, train_cfg: Any) -> torch.nn.Module:
    """The module the training loop calls: ``model`` compiled (``compile``), inside DDP with several processes.

    DDP averages gradients over ranks; with each rank's loss a mean over its batch, that is the gradient of the
    mean loss over the global batch, as one process with the whole batch would compute it.
    """
    net = torch.compile(model) if train_cfg.compile else model
    if world_size() > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
    return net


def no_sync_unless(net: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce on accumulation micro-batches that do not end an optimizer step."""
    if not sync and isinstance(net, torch.nn.parallel.DistributedDataParallel):
        return net.no_sync()
    return contextlib.nullcontext()


def autocast(device: torch.device, amp: str) -> torch.autocast:
    """Mixed precision for the forward pass: ``none``, ``bf16`` or ``fp16``."""
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=amp != "none")


def scaled_lr(train_cfg: Any) -> float:
    """``train.lr``, scaled linearly to the global batch when ``auto_scale_lr`` is set."""
    global_batch = train_cfg.batch_size * world_size() * train_cfg.accumulate
    if not train_cfg.auto_scale_lr:
        return train_cfg.lr
    lr = train_cfg.lr * global_batch / REFERENCE_GLOBAL_BATCH
    log.info("auto-scale-lr: global batch %d (%d process(es) x %d x %d accumulated) -> lr %.6g", global_batch,
             world_size(), train_cfg.batch_size, train_cfg.accumulate, lr)
    return lr


# --- resources ------------------------------------------------------------------------------------------------

def check_shared_memory(num_workers: int, batch_size: int, views: int, crop_size: int, procs: int,
                        shm: str = "/dev/shm") -> None:
    """Fail early (not with a hang or a bus error mid-epoch) when DataLoader workers cannot fit their batches.

    Each worker keeps up to ``batch_buffers.SLOTS`` (6) uint8 batches ``[B, views, 3, crop, crop]`` in shared
    memory, reused from batch to batch (an upper bound for TenCrop batches, which travel as their frames).
    """
    if num_workers == 0 or not os.path.isdir(shm):
        return
    need = procs * num_workers * SLOTS * batch_size * views * 3 * crop_size * crop_size
    free = shutil.disk_usage(shm).free
    if free < need:
        raise UserError(f"{shm} has {free / 2**20:.0f} MiB free, but {procs} process(es) x {num_workers} "
                        f"DataLoader workers need about {need / 2**20:.0f} MiB: give the container more (docker "
                        f"run --shm-size=16g) or lower data.num_workers")
