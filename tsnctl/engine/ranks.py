"""Ranks on torch.distributed: GPU specs, process groups, rank helpers and collectives.

Three ways to get a process group, all ending in ``init_process_group(init_method="env://")``:

- ``tsnctl train --gpus 0-7`` / ``--nproc N``: ``tsnctl/launch.py`` starts one worker per GPU (or CPU
  process) through torch's elastic launch API, the machinery under ``torchrun``; ``--nnodes`` with
  ``--master-addr`` (static) or ``--rdzv-endpoint`` (elastic) spans several machines.
- an outside ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT;
- SLURM's ``srun`` sets SLURM_PROCID/SLURM_STEP_NUM_TASKS/SLURM_LOCALID, which :func:`env_from_slurm`
  translates.

NCCL on CUDA, gloo on CPU. Only rank 0 logs, draws progress and writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress

log = logging.getLogger("tsnctl")

DEFAULT_PORT = 29500
INIT_TIMEOUT = datetime.timedelta(minutes=10)


# --- which GPUs -----------------------------------------------------------------------------------------------

def parse_gpus(spec: str, available: int | None = None) -> list[int]:
    """``"0-7"``, ``"0,1,3"``, ``"0-3,6"`` or ``"all"`` -> GPU indices; every one must exist on this machine."""
    available = torch.cuda.device_count() if available is None else available
    text = spec.strip().lower()
    if text == "all":
        if available == 0:
            raise UserError("--gpus all: this machine has no CUDA GPU")
        return list(range(available))
    gpus: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise UserError(f"--gpus {spec}: expected GPU indices like 0-7, 0,1,3 or all")
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if last < first:
            raise UserError(f"--gpus {spec}: range {part.strip()} runs backwards")
        gpus += [g for g in range(first, last + 1) if g not in gpus]
    missing = [g for g in gpus if g >= available]
    if missing:
        have = f"{available} GPU(s): cuda:0..cuda:{available - 1}" if available else "no CUDA GPU"
        raise UserError(f"--gpus {spec}: GPU {', '.join(map(str, missing))} not found (this machine has {have})")
    return gpus


# --- where this process is ------------------------------------------------------------------------------------

def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_world_size() -> int:
    """Processes of this job on this machine (they share its GPUs, CPU cores and shared memory)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if world_size() > 1 else 1


def is_main() -> bool:
    """True on rank 0 (and in a plain single process): the one that logs, draws progress and writes files."""
    return rank() == 0


def env_from_slurm(env: dict[str, str]) -> dict[str, str]:
    """torch's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* variables for a task started by ``srun`` (empty otherwise).

    Only inside a job step (SLURM_STEP_ID set): a batch script itself also has SLURM_NTASKS, but it is one
    process, not one of the step's tasks.
    """
    if "RANK" in env or "SLURM_PROCID" not in env or "SLURM_STEP_ID" not in env:
        return {}
    ntasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1"
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": ntasks, "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "MASTER_ADDR": env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            "MASTER_PORT": env.get("MASTER_PORT") or str(DEFAULT_PORT)}


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,9],cpu1`` -> ``gpu03``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        return nodelist
    prefix, ranges = match[1], match[2]
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def env_world_size() -> int:
    """World size announced by torchrun, the elastic launcher or srun; 1 when run as a plain process."""
    env = {**os.environ, **env_from_slurm(dict(os.environ))}
    return int(env.get("WORLD_SIZE", "1"))


# --- process group --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def process_group(device: str, gpus: list[int] | None = None) -> Iterator[None]:
    """Join the process group announced by the environment for the duration of the block.

    A plain single process starts nothing. On CUDA, local rank ``i`` uses
    ``gpus[i]`` (or GPU ``i`` modulo the visible GPUs, for one-GPU-per-task SLURM setups) and NCCL;
    otherwise gloo. Non-zero ranks only log warnings and errors.
    """
    os.environ.update(env_from_slurm(dict(os.environ)))
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise UserError("distributed training on CUDA: no CUDA GPU is visible to this process")
        index = gpus[local_rank] if gpus else local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        device = f"cuda:{index}"
    else:
        device = "cpu"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    _init(use_cuda, device)
    quiet = _QuietFilter()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)
        dist.destroy_process_group()


def _init(use_cuda: bool, device: str) -> None:
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda and not dist.is_nccl_available():
        raise UserError("this torch build has no NCCL: multi-GPU training needs a CUDA build of torch", exit_code=1)
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(backend, init_method="env://", timeout=INIT_TIMEOUT,
                                device_id=torch.device(device) if use_cuda else None)
        if use_cuda:  # NCCL connects lazily: make it connect now, so a broken setup fails here, not mid-epoch
            dist.barrier(device_ids=[torch.cuda.current_device()])
    except Exception as exc:  # noqa: BLE001 - every start-up failure gets the same one-line answer
        reason = _first_line(exc)
        hint = " (run with NCCL_DEBUG=INFO for details)" if use_cuda else ""
        raise UserError(f"{backend.upper()} could not start (rank {os.environ.get('RANK')}, master {where}): "
                        f"{reason}{hint}", exit_code=1) from None


class _QuietFilter(logging.Filter):
    """On ranks other than 0, drop tsnctl's info and debug lines (warnings and errors still show)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return is_main() or record.levelno >= logging.WARNING


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else exc.__class__.__name__)[:300]


# --- collectives ----------------------------------------------------------------------------------------------

def mean_over_ranks(values: list[float]) -> list[float]:
    """The mean of ``values`` across ranks (unchanged in a single process)."""
    if world_size() == 1:
        return values
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(tensor)
    return (tensor / world_size()).tolist()


def all_ranks(items: list[Any]) -> list[Any]:
    """Every rank's ``items`` (picklable), concatenated in rank order, on every rank."""
    if world_size() == 1:
        return list(items)
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def gather_by_index(indices: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's rows put back in dataset order, on every rank: one row per index, duplicates dropped.

    ``indices`` ``[n]`` are the dataset indices of this rank's rows of each ``tensors[i]`` ``[n, ...]``.
    """
    if world_size() == 1:
        order = indices.argsort()
        return tuple(t[order] for t in tensors)
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, (indices.cpu(), *[t.cpu() for t in tensors]))
    parts = [p for p in parts if len(p[0])] or parts[:1]  # a rank whose clips were all unreadable has no rows
    _, first = _first_occurrence(torch.cat([p[0] for p in parts]))
    return tuple(torch.cat([p[i + 1] for p in parts])[first] for i in range(len(tensors)))


def _first_occurrence(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique values and, for each, the position of its first occurrence in ``values``."""
    unique, inverse = torch.unique(values, sorted=True, return_inverse=True)
    positions = torch.arange(len(values))
    first = torch.full((len(unique),), len(values), dtype=torch.long).scatter_reduce(0, inverse, positions, "amin")
    return unique, first


def progress_or_silent(progress: ProgressFn) -> ProgressFn:
    """Rank 0 keeps its progress callback; the other ranks stay silent."""
    return progress if is_main() else no_progress
