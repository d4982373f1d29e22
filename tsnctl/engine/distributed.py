"""Multi-process training and testing on torch.distributed: GPU specs, process groups, rank helpers, launcher.

Three ways to get a process group, all ending in ``init_process_group(init_method="env://")``:

- ``tsnctl train --gpus 0-7`` / ``--nproc N``: :func:`launch` starts one worker per GPU (or CPU process)
  through torch's elastic launch API, the machinery under ``torchrun``; ``--nnodes`` with
  ``--master-addr`` (static) or ``--rdzv-endpoint`` (elastic) spans several machines.
- an outside ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT;
- SLURM's ``srun`` sets SLURM_PROCID/SLURM_STEP_NUM_TASKS/SLURM_LOCALID, which :func:`env_from_slurm`
  translates.

NCCL on CUDA, gloo on CPU. Only rank 0 logs, draws progress and writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress

log = logging.getLogger("tsnctl")

REFERENCE_GLOBAL_BATCH = 256  # 8 GPUs x 32 clips: the batch the reference's lr 0.01 belongs to
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


# --- models ---------------------------------------------------------------------------------------------------

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

    Each worker keeps up to ``prefetch_factor`` (4) uint8 batches ``[B, views, 3, crop, crop]`` in shared
    memory (an upper bound for TenCrop batches, which travel as their frames).
    """
    if num_workers == 0 or not os.path.isdir(shm):
        return
    need = procs * num_workers * 4 * batch_size * views * 3 * crop_size * crop_size
    free = shutil.disk_usage(shm).free
    if free < need:
        raise UserError(f"{shm} has {free / 2**20:.0f} MiB free, but {procs} process(es) x {num_workers} "
                        f"DataLoader workers need about {need / 2**20:.0f} MiB: give the container more (docker "
                        f"run --shm-size=16g) or lower data.num_workers")


# --- launcher -------------------------------------------------------------------------------------------------

@dataclass
class LaunchPlan:
    """How many worker processes to start here and how this machine finds the others."""

    nproc_per_node: int
    gpus: list[int] = field(default_factory=list)  # empty: CPU workers (gloo)
    nnodes: str = "1"  # "N", or "MIN:MAX" with an elastic rendezvous
    node_rank: int = 0
    master_addr: str = ""
    master_port: int = DEFAULT_PORT
    rdzv_endpoint: str = ""  # HOST:PORT of the c10d rendezvous (elastic); empty: static or single node
    run_id: str = "tsnctl"
    max_restarts: int = 0

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"


def launch_plan(device: str, gpus: str | None = None, nproc: int | None = None, nnodes: str = "1",
                node_rank: int = 0, master_addr: str = "", master_port: int = DEFAULT_PORT,
                rdzv_endpoint: str = "", max_restarts: int = 0) -> LaunchPlan | None:
    """Check the CLI's process options; None means: run in this process (alone, or under torchrun/srun)."""
    multi_node = nnodes.strip() != "1" or bool(rdzv_endpoint)
    if gpus is None and nproc is None and not multi_node:
        return None
    if gpus is not None and device == "cpu":
        raise UserError("--gpus and --device cpu contradict each other; use --nproc N for CPU workers")
    if env_world_size() > 1:
        raise UserError("already running under torchrun or srun (WORLD_SIZE is set): drop --gpus/--nproc and "
                        "let the outside launcher start the processes")
    if not re.fullmatch(r"\d+(:\d+)?", nnodes.strip()) or nnodes.strip().startswith("0"):
        raise UserError(f"--nnodes {nnodes}: expected a node count N or an elastic range MIN:MAX")
    if ":" in nnodes and not rdzv_endpoint:
        raise UserError(f"--nnodes {nnodes}: a MIN:MAX range needs --rdzv-endpoint HOST:PORT")
    if multi_node and not rdzv_endpoint and not master_addr:
        raise UserError("--nnodes > 1 needs --master-addr HOST (static) or --rdzv-endpoint HOST:PORT (elastic)")
    if gpus is not None:
        gpu_list = parse_gpus(gpus)
        if nproc is not None and nproc != len(gpu_list):
            raise UserError(f"--nproc {nproc} does not match --gpus {gpus} ({len(gpu_list)} GPU(s))")
    elif device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        gpu_list = parse_gpus(str(device.partition(":")[2] or f"0-{(nproc or torch.cuda.device_count()) - 1}"))
    else:
        gpu_list = []
    count = len(gpu_list) if gpu_list else (nproc or 1)
    if count < 1:
        raise UserError("--nproc must be at least 1")
    return LaunchPlan(count, gpu_list, nnodes.strip(), node_rank, master_addr, master_port, rdzv_endpoint,
                      max_restarts=max_restarts)


def launch(plan: LaunchPlan, entry: Callable[..., Any], args: tuple, ui: Callable[[], Any] | None = None) -> Any:
    """Run ``entry(*args, progress=...)`` in ``plan.nproc_per_node`` workers here; returns local rank 0's result.

    ``entry`` and ``args`` are pickled into spawned processes: top-level functions and plain data only (a
    config travels as ``cfg.to_dict()``). ``ui`` (a picklable factory of a context manager yielding a
    ProgressFn) draws progress on rank 0; other ranks report nothing.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    min_nodes, _, max_nodes = plan.nnodes.partition(":")
    if plan.rdzv_endpoint:
        backend, endpoint, rdzv_configs = "c10d", plan.rdzv_endpoint, {}
    elif plan.master_addr:
        backend, endpoint = "static", f"{plan.master_addr}:{plan.master_port}"
        rdzv_configs = {"rank": plan.node_rank}
    else:  # one machine: a private rendezvous on a free local port, like `torchrun --standalone`
        backend, endpoint, rdzv_configs = "c10d", f"127.0.0.1:{_free_port()}", {}
    config = LaunchConfig(min_nodes=int(min_nodes), max_nodes=int(max_nodes or min_nodes),
                          nproc_per_node=plan.nproc_per_node, run_id=plan.run_id if plan.rdzv_endpoint else
                          uuid.uuid4().hex, rdzv_backend=backend, rdzv_endpoint=endpoint,
                          rdzv_configs=rdzv_configs, max_restarts=plan.max_restarts, start_method="spawn",
                          monitor_interval=0.5)
    error_dir = tempfile.mkdtemp(prefix="tsnctl_errors_")
    # The agent logs each failed worker with its own traceback; workers print theirs (see _worker), and the
    # failure reaches the caller as one UserError.
    for name in ("torch.distributed.elastic", "torch.multiprocessing.spawn"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(config, _worker)(entry, args, plan.device, plan.gpus, ui, error_dir)
    except ChildFailedError as exc:
        raise _worker_error(error_dir, exc) from None
    except SignalException:  # Ctrl-C or a scheduler's SIGTERM: the workers are stopped already
        raise KeyboardInterrupt from None
    finally:
        shutil.rmtree(error_dir, ignore_errors=True)
    return results[0] if 0 in results else next(iter(results.values()))


def _worker(entry: Callable[..., Any], args: tuple, device: str, gpus: list[int], ui: Callable[[], Any] | None,
            error_dir: str) -> Any:
    """The spawned worker: join the group, run ``entry`` with this rank's device, report UserErrors by file."""
    try:
        with process_group(device, gpus):
            use_ui = ui is not None and is_main()
            with ui() if use_ui else contextlib.nullcontext(no_progress) as progress:
                return entry(*args, progress=progress)
    except UserError as exc:
        path = Path(error_dir) / f"rank{os.environ.get('RANK', '0')}.json"
        path.write_text(json.dumps({"message": str(exc), "exit_code": exc.exit_code}))
        sys.exit(exc.exit_code)
    except Exception:  # a bug, not bad input: show where, from the rank it happened on
        print(f"[rank {os.environ.get('RANK', '?')}] {traceback.format_exc()}", file=sys.stderr, flush=True)
        raise


def train_entry(cfg_dict: dict[str, Any], output_dir: str, validate: bool, resume: bool | str,
                progress: ProgressFn = no_progress) -> Any:
    """Worker entry of ``tsnctl train``: the config travels as a plain dict (picklable into spawned workers).

    Workers restarted by the elastic agent (a node joined or left) continue from ``last.pt``.
    """
    from tsnctl.config import config_from_dict
    from tsnctl.engine.train import train

    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    resume = resume or (restarted and (Path(output_dir) / "last.pt").is_file())
    return train(config_from_dict(cfg_dict, source="config"), output_dir, validate, resume, progress)


def evaluate_entry(cfg_dict: dict[str, Any], weights: str, list_file: str, save_scores: str | None,
               progress: ProgressFn = no_progress) -> Any:
    """Worker entry of ``tsnctl test``: every rank scores its shard, every rank returns the whole result."""
    from tsnctl.config import config_from_dict
    from tsnctl.engine.evaluate import run_test
    from tsnctl.weights import load_for_inference

    loaded = load_for_inference(weights, config_from_dict(cfg_dict, source="config"))
    return run_test(loaded.model, loaded.cfg, list_file, save_scores, progress)


def _worker_error(error_dir: str, exc: Exception) -> UserError:
    """The first worker's UserError, or a summary naming the rank that crashed."""
    reports = sorted(Path(error_dir).glob("rank*.json"), key=lambda p: int(p.stem[4:]))
    if reports:
        report = json.loads(reports[0].read_text())
        return UserError(report["message"], exit_code=report["exit_code"])
    failures = getattr(exc, "failures", {})
    global_rank, failure = min(failures.items()) if failures else (0, None)
    detail = f"exit code {failure.exitcode}" if failure is not None else "see above"
    return UserError(f"worker rank {global_rank} failed ({detail}); its error is printed above", exit_code=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def progress_or_silent(progress: ProgressFn) -> ProgressFn:
    """Rank 0 keeps its progress callback; the other ranks stay silent."""
    return progress if is_main() else no_progress
