"""Shared pieces of the command line: consoles, one-line errors, progress, config and weights loading,
the options several commands share, and running a command on one or many processes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tsnctl.config import Config, load_config, validate
from tsnctl.errors import UserError
from tsnctl.progress import LogProgress, ProgressFn

err_console = Console(stderr=True)


out_console = Console()


log = logging.getLogger("tsnctl")


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]


OverrideOpt = Annotated[list[str] | None, typer.Option(
    "--override", "-o", help="Override a config value, e.g. -o train.lr=0.02 (repeatable).")]


WEIGHTS_HELP = ("Weights: a tsnctl checkpoint, a reference .pdparams, an MMAction2 TSN checkpoint or a torchvision "
                "ResNet state dict (the format is read from the file; -c gives the network of formats without a "
                "config).")


WeightsOpt = Annotated[Path | None, typer.Option("--weights", "-w", help=WEIGHTS_HELP)]


ProviderOpt = Annotated[str, typer.Option(help="onnxruntime provider for -m: cpu, cuda or tensorrt.")]


DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N (default: the "
                                                                   "config's train.device).")]


def cli_errors(fn: Callable) -> Callable:
    """Turn UserError, OS errors and Ctrl-C into one red line on stderr and an exit code, never a traceback.

    UserError is raised where the problem is known (file, line, key); the OSError and decoding branches are
    the safety net for what slips through (a read-only or full disk, an output path in a missing folder).
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise
        except UserError as exc:
            _fail(_one_line(str(exc)), exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as exc:
            _fail(os_error_line(exc), 2 if isinstance(exc, _BAD_PATH_ERRORS) else 1)
        except UnicodeDecodeError as exc:
            _fail(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})", 2)
        except yaml.YAMLError as exc:
            _fail(f"not valid YAML ({_one_line(str(exc))})", 2)
        except Exception as exc:  # noqa: BLE001 - last resort: a bug still gets one line; -v shows the traceback
            log.debug("traceback of the unexpected error", exc_info=True)
            _fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc))} (run with -v for the traceback)", 1)
    return wrapper


# Wrong paths on the command line (input), as opposed to a disk that fails while we work (exit 1).
_BAD_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)


def os_error_line(exc: OSError) -> str:
    """``<file>: <reason>`` for an OSError (both files for a failed rename)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    files = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
    return f"{files}: {reason}"


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None


def _one_line(message: str) -> str:
    # Errors raised inside DataLoader workers come back wrapped with the worker's traceback.
    lines = [line for line in message.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else message
    return last.split("UserError: ", 1)[-1]


@contextmanager
def rich_progress() -> Iterator[ProgressFn]:
    """A ProgressFn drawing one Rich bar per task, with rate, ETA and a status text; plain log lines instead
    when stderr is not a terminal (a log file, a pipe, CI)."""
    if not err_console.is_terminal:
        yield LogProgress()
        return
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        TextColumn("{task.fields[status]}"), console=err_console,
                        disable=log.getEffectiveLevel() > logging.INFO)
    tasks: dict[str, int] = {}

    def update(task: str, done: int, total: int, status: str = "") -> None:
        if task not in tasks:
            tasks[task] = progress.add_task(task, total=total, status="", rate="")
        speed = progress.tasks[tasks[task]].speed
        rate = f"{speed:.1f} it/s" if speed else ""
        progress.update(tasks[task], completed=done, total=total, status=status, rate=rate)

    with progress:
        yield update


def build_config(config: Path | None, overrides: list[str] | None, device: str | None = None) -> Config:
    cfg = load_config(config, overrides)
    if device:
        cfg.train.device = device
    return cfg


def load_weights(weights: Path, config: Path | None, overrides: list[str] | None):
    """A model for test/export/predict: with -c, that config (its model section must fit the weights);
    without, the config stored with the weights; -o overrides apply on top of either."""
    from tsnctl.workflow import load_model

    return load_model(weights, build_config(config, overrides) if config is not None else None, overrides)


def silent(task: str, done: int, total: int, status: str = "") -> None:
    """No bar for a single clip."""


AmpOpt = Annotated[str | None, typer.Option(help="Mixed precision: none, bf16 or fp16 (fp16: CUDA only, with a "
                                                 "GradScaler); default: train.amp.")]


ChannelsLastOpt = Annotated[bool | None, typer.Option("--channels-last/--no-channels-last", help="NHWC memory "
                                                      "layout for the convolutions (default: train.channels_last).")]


AccumulateOpt = Annotated[int | None, typer.Option(help="Micro-batches per optimizer step (gradient accumulation; "
                                                        "default: train.accumulate).")]


CompileOpt = Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model "
                                                 "(default: train.compile).")]


SyncBnOpt = Annotated[bool | None, typer.Option("--sync-bn/--no-sync-bn", help="BatchNorm statistics over all "
                                                "GPUs (default: train.sync_bn).")]


AutoScaleLrOpt = Annotated[bool | None, typer.Option("--auto-scale-lr/--no-auto-scale-lr", help="Scale train.lr "
                                                     "by global batch / 256, the reference's batch (default: "
                                                     "train.auto_scale_lr).")]


GpusOpt = Annotated[str | None, typer.Option(help="Start one worker per GPU on this machine: 0-7, 0,1,3 or all "
                                                  "(NCCL).")]
InitFromOpt = Annotated[str | None, typer.Option("--init-from", metavar="WEIGHTS|NAME", help=(
    "Start from these weights: a file (any -w format, or backbone-only ImageNet weights), or a published "
    "Kinetics-400 checkpoint by name, downloaded once into the torch hub cache with its hash checked (names: "
    "docs/finetune.md, e.g. mmaction2-tsn-r50-1x1x8-k400, paddle-tsn-r50-1x1x3-k400). Loads the backbone, and the "
    "head when its classes match; sets model.init_from."))]


NprocOpt = Annotated[int | None, typer.Option(help="Worker processes on this machine (with --device cpu: gloo "
                                                   "workers).")]


NnodesOpt = Annotated[str, typer.Option(help="Machines taking part: N, or MIN:MAX with --rdzv-endpoint.")]


NodeRankOpt = Annotated[int, typer.Option(help="This machine's index, 0..nnodes-1 (static rendezvous).")]


MasterAddrOpt = Annotated[str, typer.Option(help="Host of node 0 (static rendezvous with --nnodes).")]


MasterPortOpt = Annotated[int, typer.Option(help="Port on the --master-addr host.")]


RdzvOpt = Annotated[str, typer.Option(help="HOST:PORT of an elastic (c10d) rendezvous; every node gives the same "
                                           "one.")]


def set_train_features(cfg: Config, amp: str | None, channels_last: bool | None, accumulate: int | None,
                        compile_model: bool | None, sync_bn: bool | None, auto_scale_lr: bool | None) -> None:
    """Flags given on the command line win over the config file."""
    flags = {"amp": amp, "channels_last": channels_last, "accumulate": accumulate, "compile": compile_model,
             "sync_bn": sync_bn, "auto_scale_lr": auto_scale_lr}
    for key, value in flags.items():
        if value is not None:
            setattr(cfg.train, key, value)
    validate(cfg)


def run_on_ranks(cfg: Config, layout: tuple, entry: Callable, *args):
    """``entry(cfg_dict, *args)`` here, under an outside torchrun/srun, or in the workers started for
    ``layout`` = (gpus, nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint)."""
    from tsnctl.launch import run_on_ranks as run

    if layout[1] is not None and layout[1] < 1:
        raise UserError(f"--nproc {layout[1]}: must be at least 1")
    return run(cfg, layout, entry, *args, ui=console_ui())


def console_ui() -> Callable[[], Any]:
    """The progress bars and log lines of rank 0, as a factory that travels into spawned workers."""
    return functools.partial(_worker_console, log.getEffectiveLevel())


@contextmanager
def _worker_console(level: int) -> Iterator[ProgressFn]:
    """Logging and progress bars of the rank-0 worker process (spawned workers start unconfigured)."""
    setup_logging(level)
    with rich_progress() as progress:
        yield progress


def setup_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", force=True,
                        handlers=[RichHandler(console=err_console, show_path=False, markup=False)])
    logging.getLogger("tsnctl").setLevel(level)
