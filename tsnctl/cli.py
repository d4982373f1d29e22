"""The ``tsnctl`` command line: parse options, build a config, call one library function, show results.

No logic lives here beyond presentation: everything a command does is callable from Python.
Exit codes: 0 ok, 1 failure while working, 2 bad usage or bad input.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tsnctl import __version__
from tsnctl.config import Config, apply_overrides, load_config, validate
from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn

app = typer.Typer(help="Temporal Segment Networks for video action recognition: extract, train, test, export, "
                       "predict.", no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False)
err_console = Console(stderr=True)
out_console = Console()
log = logging.getLogger("tsnctl")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
OverrideOpt = Annotated[list[str] | None, typer.Option(
    "--override", "-o", help="Override a config value, e.g. -o train.lr=0.02 (repeatable).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N (default: the "
                                                                   "config's train.device).")]


def cli_errors(fn: Callable) -> Callable:
    """Turn UserError (and Ctrl-C) into one red line on stderr and an exit code, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err_console.print(f"[bold red]error:[/] {_one_line(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
    return wrapper


def _one_line(message: str) -> str:
    # Errors raised inside DataLoader workers come back wrapped with the worker's traceback.
    lines = [line for line in message.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else message
    return last.split("UserError: ", 1)[-1]


@contextmanager
def rich_progress() -> Iterator[ProgressFn]:
    """A ProgressFn drawing one Rich bar per task, with rate, ETA and a status text."""
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


def _config(config: Path | None, overrides: list[str] | None, device: str | None = None) -> Config:
    cfg = load_config(config, overrides)
    if device:
        cfg.train.device = device
    return cfg


def _load_weights(weights: Path, config: Path | None, overrides: list[str] | None):
    """A model for test/export/predict: with -c, that config (its model section must fit the weights);
    without, the config stored with the weights; -o overrides apply on top of either."""
    from tsnctl.weights import load_for_inference

    if config is not None:
        return load_for_inference(weights, _config(config, overrides))
    loaded = load_for_inference(weights, None)
    apply_overrides(loaded.cfg, overrides or [])
    return loaded


def _print_version(value: bool) -> None:
    if value:
        out_console.print(f"tsnctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Temporal Segment Networks for video action recognition."""
    _setup_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def _setup_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", force=True,
                        handlers=[RichHandler(console=err_console, show_path=False, markup=False)])
    logging.getLogger("tsnctl").setLevel(level)


@app.command("demo-data")
@cli_errors
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to write videos/, train and val lists and labels.txt into.")],
    train_per_class: Annotated[int, typer.Option(help="Training clips per class.")] = 30,
    val_per_class: Annotated[int, typer.Option(help="Validation clips per class.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed renders the same clips.")] = 0,
) -> None:
    """Render a small synthetic action dataset (6 classes of moving shapes) as mp4 clips."""
    from tsnctl.demo_data import make_demo_data

    with rich_progress() as progress:
        summary = make_demo_data(out, train_per_class, val_per_class, seed, progress)
    out_console.print(f"wrote {summary.clips} clips of {len(summary.classes)} classes to {summary.root}: "
                      f"{summary.train_list.name}, {summary.val_list.name}, {summary.label_file.name}")


@app.command("extract-frames")
@cli_errors
def extract_frames(
    src: Annotated[Path, typer.Argument(help="A folder laid out class/video.mp4, or a video list '<path> <label>'.")],
    out: Annotated[Path, typer.Argument(help="Output root: OUT/<video path>/img_00001.jpg ...")],
    list_file: Annotated[Path | None, typer.Option("--list-file", help="Frame list to write (default: "
                         "OUT/frame_list.txt for a folder, OUT/<list name>_frames.txt for a list).")] = None,
    root: Annotated[str, typer.Option(help="Folder the video list's paths are relative to (default: the "
                                           "list's folder).")] = "",
    workers: Annotated[int, typer.Option(help="Videos extracted in parallel.")] = min(4, os.cpu_count() or 1),
    short_side: Annotated[int, typer.Option(help="Resize frames to this short side (aspect kept); 0 keeps the "
                                                 "size, as the reference.")] = 0,
    quality: Annotated[int, typer.Option(help="JPEG quality (the reference uses OpenCV's default, 95).")] = 95,
    shard: Annotated[str | None, typer.Option(help="Extract only shard I of N (I/N, 0 <= I < N) of the videos, "
                                                      "chosen by a hash of each video's path; join the shard lists "
                                                      "with 'tsnctl merge-lists'.")] = None,
) -> None:
    """Extract JPEG frame folders from videos and write a frame list '<frame_dir> <num_frames> <label>'."""
    from tsnctl.extract import extract_frames as run
    from tsnctl.shards import parse_shard

    shard_spec = parse_shard(shard) if shard else None
    with rich_progress() as progress:
        summary = run(src, out, list_file, root, workers, short_side, quality, shard_spec, progress)
    out_console.print(f"extracted {summary.frames} frames from {summary.videos} videos "
                      f"({summary.bytes_written / 1e6:.1f} MB) -> {summary.list_file}")
    if summary.label_file:
        out_console.print(f"class names (from folder names) -> {summary.label_file}")
    if summary.failed:
        for _video, reason in summary.failed:
            err_console.print(f"[red]failed:[/] {reason}", highlight=False)
        raise UserError(f"{len(summary.failed)} of {len(summary.failed) + summary.videos} videos could not be "
                        "extracted (listed above); they are not in the frame list", exit_code=1)


@app.command()
@cli_errors
def train(
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    output: Annotated[Path | None, typer.Option("--output", help="Run folder (default: runs/<config name>).")] = None,
    validate: Annotated[bool, typer.Option("--validate", help="Validate after every epoch (CenterCrop) and keep "
                                                              "best.pt by validation top-1.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUTPUT/last.pt.")] = False,
    device: DeviceOpt = None,
    amp: AmpOpt = None,
    channels_last: ChannelsLastOpt = None,
    accumulate: AccumulateOpt = None,
    compile_model: CompileOpt = None,
    sync_bn: SyncBnOpt = None,
    auto_scale_lr: AutoScaleLrOpt = None,
    gpus: GpusOpt = None,
    nproc: NprocOpt = None,
    nnodes: NnodesOpt = "1",
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = "",
    master_port: MasterPortOpt = 29500,
    rdzv_endpoint: RdzvOpt = "",
) -> None:
    """Train a TSN with the reference recipe; writes last.pt, best.pt, metrics.csv and config.yaml."""
    from tsnctl.engine.distributed import train_entry

    cfg = _config(config, override, device)
    _set_train_features(cfg, amp, channels_last, accumulate, compile_model, sync_bn, auto_scale_lr)
    output = output or Path("runs") / (config.stem if config else "default")
    layout = (gpus, nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint)
    result = _run_on_ranks(cfg, layout, train_entry, str(output), validate, resume)
    if result is None:
        return
    best = f", best valid top-1 {result.best_top1:.2f}%" if result.best_top1 is not None else ""
    out_console.print(f"trained {result.epochs_run} epoch(s){best} -> {result.output_dir}")


@app.command()
@cli_errors
def test(
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="Checkpoint to evaluate.")] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="Or an ONNX model from 'tsnctl export' (own test protocol; -c gives the lists).",
    )] = None,
    provider: Annotated[str, typer.Option(help="onnxruntime provider for -m: cpu, cuda or tensorrt.")] = "cpu",
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    crop: Annotated[str | None, typer.Option(help="ten (TenCrop), three (ThreeCrop) or center (CenterCrop); "
                                                     "default: the config's test.crop.")] = None,
    num_seg: Annotated[int | None, typer.Option(help="Segments per video (default: test.num_seg).")] = None,
    list_file: Annotated[Path | None, typer.Option("--list", help="Test list (default: data.test_list).")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Root of the list's paths (default: data.root).")] = None,
    save_scores: Annotated[Path | None, typer.Option(help="CSV with one row per video: name, label, "
                                                             "logit_0 ...")] = None,
    metrics_json: Annotated[Path | None, typer.Option(help="Write the metrics as JSON to this file.")] = None,
    device: DeviceOpt = None,
    gpus: GpusOpt = None,
    nproc: NprocOpt = None,
    nnodes: NnodesOpt = "1",
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = "",
    master_port: MasterPortOpt = 29500,
    rdzv_endpoint: RdzvOpt = "",
) -> None:
    """Evaluate a checkpoint or an ONNX model: video-level top-1/top-5 and mean class accuracy over all views."""
    from tsnctl.engine.distributed import evaluate_entry
    from tsnctl.engine.evaluate import run_test
    from tsnctl.runtime import OnnxClassifier, apply_protocol, inference_session, model_metadata

    if (weights is None) == (model is None):
        raise UserError("give exactly one of -w CHECKPOINT or -m MODEL.onnx")
    if model is not None:
        session = inference_session(model, provider)
        cfg = apply_protocol(_config(config, override), model_metadata(session, model))
        classifier = OnnxClassifier(session)
    else:
        loaded = _load_weights(weights, config, override)
        cfg, classifier = loaded.cfg, loaded.model
    if device:
        cfg.train.device = device
    if crop is not None:
        cfg.test.crop = crop
    if num_seg is not None:
        cfg.test.num_seg = num_seg
    if data_root is not None:
        cfg.data.root = str(data_root)
    validate(cfg)
    layout = (gpus, nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint)
    if model is not None:
        if layout != (None, None, "1", 0, "", 29500, ""):
            raise UserError("--gpus/--nproc/--nnodes test checkpoints (-w); an ONNX model (-m) runs in one process")
        with rich_progress() as progress:
            result = run_test(classifier, cfg, str(list_file or ""), save_scores, progress)
    else:
        result = _run_on_ranks(cfg, layout, evaluate_entry, str(weights), str(list_file or ""),
                               str(save_scores) if save_scores else None)
    if result is None:
        return
    out_console.print(f"test: {result.num_videos} videos, {result.protocol}", soft_wrap=True, highlight=False)
    table = Table()
    for column in ("top-1", "top-5", "mean class acc"):
        table.add_column(column, justify="right")
    table.add_row(f"{result.top1:.2f}%", f"{result.top5:.2f}%", f"{result.mean_class:.2f}%")
    out_console.print(table)
    if metrics_json:
        metrics_json.write_text(json.dumps({"top1": result.top1, "top5": result.top5, "mean_class_accuracy":
                                            result.mean_class, "videos": result.num_videos,
                                            "protocol": result.protocol}, indent=2))


@app.command()
@cli_errors
def export(
    weights: Annotated[Path, typer.Option("--weights", "-w", help="Checkpoint to export.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="ONNX file to write.")],
    config: ConfigOpt = None,
    override: Annotated[list[str] | None, typer.Option(
        "--override", help="Override a config value, e.g. --override test.num_seg=8 (repeatable; -o is the "
                           "output file here).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision weights and input; verified against the fp32 "
                                                      "model (max logit difference within 1% of the largest logit, "
                                                      "same top-1).")] = False,
) -> None:
    """Export a checkpoint to ONNX (input [N, views, 3, H, W]) and verify it with onnxruntime."""
    from tsnctl.export import to_onnx

    report = to_onnx(_load_weights(weights, config, override), output, fp16=fp16)
    out_console.print(f"exported {report.path} ({'fp16' if fp16 else 'fp32'}, input clips {report.input_shape}); "
                      f"onnx.checker ok; onnxruntime vs torch (fp32) max abs diff {report.max_abs_diff:.2e}")


@app.command()
@cli_errors
def predict(
    clips: Annotated[list[Path], typer.Argument(help="Video files or frame folders to classify.")],
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="A tsnctl checkpoint.")] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", help="An ONNX model from 'tsnctl export'.")] = None,
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    topk: Annotated[int, typer.Option(help="How many classes to show per clip.")] = 5,
    labels: Annotated[Path | None, typer.Option(help="Class names file overriding the model's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON to stdout.")] = False,
    device: DeviceOpt = None,
    provider: Annotated[str, typer.Option(help="onnxruntime provider for -m: cpu, cuda or tensorrt.")] = "cpu",
) -> None:
    """Classify clips with a checkpoint (-w) or an exported ONNX model (-m); prints the top-k classes."""
    from tsnctl.data.dataset import ClipSettings
    from tsnctl.data.lists import read_labels
    from tsnctl.engine.loaders import resolve_device
    from tsnctl.predict import onnx_predictor, torch_predictor
    from tsnctl.predict import predict as run

    if (weights is None) == (model is None):
        raise UserError("give exactly one of -w CHECKPOINT or -m MODEL.onnx")
    if topk < 1:
        raise UserError("--topk must be at least 1")
    if model is not None:
        predictor = onnx_predictor(model, provider)
    else:
        loaded = _load_weights(weights, config, override)
        cfg = loaded.cfg
        settings = ClipSettings(cfg.data.format, cfg.test.num_seg, cfg.data.short_side, cfg.data.crop_size,
                                crop=cfg.test.crop, image_template=cfg.data.image_template)
        predictor = torch_predictor(loaded.model, settings, loaded.class_names,
                                    resolve_device(device or cfg.train.device))
    names = read_labels(labels) if labels else None
    with rich_progress() as progress:
        results = run(predictor, [str(c) for c in clips], topk, names, progress if len(clips) > 1 else _silent)
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return
    for result in results:
        table = Table(title=result["clip"], title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("class")
        table.add_column("id", justify="right")
        table.add_column("prob", justify="right")
        for rank, entry in enumerate(result["topk"], start=1):
            table.add_row(str(rank), entry["label"], str(entry["index"]), f"{entry['prob']:.5f}")
        out_console.print(table)


@app.command("merge-lists")
@cli_errors
def merge_lists(
    src: Annotated[Path, typer.Argument(help="The folder or video list extracted in shards (sets the order).")],
    shard_lists: Annotated[list[Path], typer.Argument(help="The frame lists written by 'extract-frames --shard'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Merged frame list to write.")],
    root: Annotated[str, typer.Option(help="Folder the video list's paths are relative to.")] = "",
    allow_missing: Annotated[bool, typer.Option(help="Merge even when some videos are in no shard list.")] = False,
) -> None:
    """Join the frame lists of sharded extractions into the list one machine would have written."""
    from tsnctl.extract import find_jobs
    from tsnctl.shards import merge_frame_lists

    jobs, _ = find_jobs(src, root)
    lines = merge_frame_lists([job.name for job in jobs], [str(p) for p in shard_lists], allow_missing)
    output.write_text("".join(lines))
    out_console.print(f"merged {len(lines)} of {len(jobs)} videos from {len(shard_lists)} shard list(s) -> {output}")


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
NprocOpt = Annotated[int | None, typer.Option(help="Worker processes on this machine (with --device cpu: gloo "
                                                   "workers).")]
NnodesOpt = Annotated[str, typer.Option(help="Machines taking part: N, or MIN:MAX with --rdzv-endpoint.")]
NodeRankOpt = Annotated[int, typer.Option(help="This machine's index, 0..nnodes-1 (static rendezvous).")]
MasterAddrOpt = Annotated[str, typer.Option(help="Host of node 0 (static rendezvous with --nnodes).")]
MasterPortOpt = Annotated[int, typer.Option(help="Port on the --master-addr host.")]
RdzvOpt = Annotated[str, typer.Option(help="HOST:PORT of an elastic (c10d) rendezvous; every node gives the same "
                                           "one.")]


def _set_train_features(cfg: Config, amp: str | None, channels_last: bool | None, accumulate: int | None,
                        compile_model: bool | None, sync_bn: bool | None, auto_scale_lr: bool | None) -> None:
    """Flags given on the command line win over the config file."""
    flags = {"amp": amp, "channels_last": channels_last, "accumulate": accumulate, "compile": compile_model,
             "sync_bn": sync_bn, "auto_scale_lr": auto_scale_lr}
    for key, value in flags.items():
        if value is not None:
            setattr(cfg.train, key, value)
    validate(cfg)


def _run_on_ranks(cfg: Config, layout: tuple, entry: Callable, *args):
    """``entry(cfg_dict, *args)`` here, under an outside torchrun/srun, or in the workers started for
    ``layout`` = (gpus, nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint)."""
    from tsnctl.engine.distributed import is_main, launch, launch_plan, process_group

    plan = launch_plan(cfg.train.device, *layout)
    level = log.getEffectiveLevel()
    if plan is not None:
        cfg.train.device = plan.device
        return launch(plan, entry, (cfg.to_dict(), *args), functools.partial(_worker_console, level))
    with process_group(cfg.train.device):
        with rich_progress() if is_main() else _no_console() as progress:
            result = entry(cfg.to_dict(), *args, progress=progress)
        return result if is_main() else None  # under torchrun/srun, rank 0 prints the results


@contextmanager
def _worker_console(level: int) -> Iterator[ProgressFn]:
    """Logging and progress bars of the rank-0 worker process (spawned workers start unconfigured)."""
    _setup_logging(level)
    with rich_progress() as progress:
        yield progress


@contextmanager
def _no_console() -> Iterator[ProgressFn]:
    yield _silent


def _silent(task: str, done: int, total: int, status: str = "") -> None:
    """No bar for a single clip."""


def main() -> None:
    app(prog_name="tsnctl")
