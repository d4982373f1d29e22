"""The process launcher of ``tsnctl train`` and ``tsnctl test``: one worker per GPU (or CPU process).

:func:`launch` starts workers through torch's elastic launch API, the machinery under ``torchrun``;
``--nnodes`` with ``--master-addr`` (static) or ``--rdzv-endpoint`` (elastic) spans several machines. It sits
above the engine: the worker entries import training and testing, the engine never imports the launcher.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tsnctl.config import Config
from tsnctl.engine.ranks import DEFAULT_PORT, env_world_size, is_main, parse_gpus, process_group
from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress

log = logging.getLogger("tsnctl")

# The CLI's process options: (gpus, nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint).
Layout = tuple
SINGLE_PROCESS: Layout = (None, None, "1", 0, "", DEFAULT_PORT, "")


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



def run_on_ranks(cfg: Config, layout: Layout, entry: Callable[..., Any], *args: Any,
                 ui: Callable[[], Any] | None = None) -> Any:
    """``entry(cfg_dict, *args)`` here, under an outside torchrun/srun, or in the workers started for ``layout``.

    ``ui``: a picklable factory of a context manager yielding rank 0's ProgressFn. Returns rank 0's result
    (None on the other ranks of an outside launcher).
    """
    plan = launch_plan(cfg.train.device, *layout)
    if plan is not None:
        cfg.train.device = plan.device
        return launch(plan, entry, (cfg.to_dict(), *args), ui)
    with process_group(cfg.train.device):
        with ui() if ui is not None and is_main() else contextlib.nullcontext(no_progress) as progress:
            result = entry(cfg.to_dict(), *args, progress=progress)
        return result if is_main() else None  # under torchrun/srun, rank 0 prints the results

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
    from tsnctl.weights.load import load_for_inference

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

