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
from tsnctl.config import Config, load_config, validate
from tsnctl.errors import UserError
from tsnctl.progress import LogProgress, ProgressFn

app = typer.Typer(help="Temporal Segment Networks for video action recognition: extract, train, test, export, "
                       "predict.", no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False)
err_console = Console(stderr=True)
out_console = Console()
log = logging.getLogger("tsnctl")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
OverrideOpt = Annotated[list[str] | None, typer.Option(
    "--override", "-o", help="Override a config value, e.g. -o train.lr=0.02 (repeatable).")]
WEIGHTS_HELP = ("Weights: a tsnctl checkpoint, a reference .pdparams, an MMAction2 TSN checkpoint or a torchvision "
                "ResNet state dict (the format is read from the file; -c gives the network of formats without a "
                "config).")
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
    return load_for_inference(weights, None, overrides=overrides)


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
    kind: Annotated[str, typer.Option(help="shapes: 6 classes of moving shapes and textures; direction: 4 "
                                           "classes told apart only by the direction of motion (drift up/"
                                           "down, zoom in/out), which TSN cannot learn and TSM can.")] = "shapes",
) -> None:
    """Render a small synthetic action dataset as mp4 clips (--kind shapes or direction)."""
    from tsnctl.demo_data import make_demo_data

    with rich_progress() as progress:
        summary = make_demo_data(out, train_per_class, val_per_class, seed, progress, kind)
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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only estimate the frame count and disk use; "
                                                             "write nothing.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Extract again videos whose frame folder "
                                                                "already exists (default: skip them).")] = False,
) -> None:
    """Extract JPEG frame folders from videos and write a frame list '<frame_dir> <num_frames> <label>'.

    Re-running skips completed videos and finishes the rest; a per-video report goes to OUT.
    """
    from tsnctl.extract import extract_frames as run
    from tsnctl.shards import parse_shard

    shard_spec = parse_shard(shard) if shard else None
    if dry_run:
        return _extract_dry_run(src, root, short_side, quality)

    with rich_progress() as progress:
        summary = run(src, out, list_file, root, workers, short_side, quality, shard_spec, progress,
                      overwrite=overwrite)
    skipped = f", {summary.skipped} already done" if summary.skipped else ""
    out_console.print(f"extracted {summary.frames} frames from {summary.videos} videos{skipped} "
                      f"({summary.bytes_written / 1e6:.1f} MB) -> {summary.list_file}; report "
                      f"{summary.report_file}", soft_wrap=True, highlight=False)
    if summary.label_file:
        out_console.print(f"class names (from folder names) -> {summary.label_file}")
    if summary.failed:
        for _video, reason in summary.failed:
            err_console.print(f"[red]failed:[/] {reason}", highlight=False, soft_wrap=True)
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
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in OUTPUT, "
                                                          "mid-epoch included.")] = False,
    resume_from: Annotated[Path | None, typer.Option("--resume-from", help="Continue from this checkpoint.")] = None,
    max_bad_fraction: Annotated[float | None, typer.Option(
        "--max-bad-fraction", help="Stop when more than this fraction of training clips cannot be read "
                                   "(default: train.max_bad_fraction, 0.01).")] = None,
    init_from: Annotated[Path | None, typer.Option("--init-from", help="Start from these weights (any -w format, or "
                         "backbone-only ImageNet weights): the backbone, and the head when its classes match; sets "
                         "model.init_from.")] = None,
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
    """Train a TSN with the reference recipe; writes checkpoints, metrics and curves into the run folder.

    The run folder gets last.pt, best.pt (with --validate), config.yaml, metrics.csv (per
    epoch), steps.csv (per log interval), curves.png, and TensorBoard events in tensorboard/
    when tensorboard is installed. Unreadable clips are skipped and listed in bad_samples.csv.
    Ctrl-C or SIGTERM saves last.pt and stops; --resume continues exactly where it stopped.
    """
    from tsnctl.config import validate as validate_config
    from tsnctl.engine.distributed import train_entry

    cfg = _config(config, override, device)
    _set_train_features(cfg, amp, channels_last, accumulate, compile_model, sync_bn, auto_scale_lr)
    if max_bad_fraction is not None:
        cfg.train.max_bad_fraction = max_bad_fraction
        validate_config(cfg)
    if init_from is not None:
        cfg.model.init_from = str(init_from)
    output = output or Path("runs") / (config.stem if config else "default")
    layout = (gpus, nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint)
    resume_arg = str(resume_from) if resume_from else resume
    result = _run_on_ranks(cfg, layout, train_entry, str(output), validate, resume_arg)
    if result is None:
        return
    best = f", best valid top-1 {result.best_top1:.2f}%" if result.best_top1 is not None else ""
    out_console.print(f"trained {result.epochs_run} epoch(s){best} -> {result.output_dir}")


@app.command()
@cli_errors
def test(
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help=WEIGHTS_HELP)] = None,
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
    report_dir: Annotated[Path | None, typer.Option(help="Folder for per_class.csv, confused_pairs.csv, "
                                                         "confusion.png and metrics.json (default: "
                                                         "<checkpoint folder>/test_<list name>).")] = None,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Exit 0 even when some videos could not "
                                                                        "be read (they are still excluded and "
                                                                        "listed).")] = False,
    device: DeviceOpt = None,
    max_views_per_batch: Annotated[int | None, typer.Option(help="Run a clip's views through the model in "
                                   "chunks of at most this many (same scores, bounded memory; default: "
                                   "test.max_views_per_batch, 0 = all at once).")] = None,
    gpus: GpusOpt = None,
    nproc: NprocOpt = None,
    nnodes: NnodesOpt = "1",
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = "",
    master_port: MasterPortOpt = 29500,
    rdzv_endpoint: RdzvOpt = "",
) -> None:
    """Evaluate a checkpoint or an ONNX model: video-level top-1/top-5 and mean class accuracy over all views.

    Also writes a report (per_class.csv, confused_pairs.csv, confusion.png, metrics.json)
    into --report-dir. Unreadable videos are excluded (never replaced) and listed; then the exit
    code is 1 unless --allow-missing.
    """
    from tsnctl.engine.distributed import evaluate_entry
    from tsnctl.engine.evaluate import run_test
    from tsnctl.reports import summary, write_report
    from tsnctl.runtime import OnnxClassifier, apply_protocol, class_names, inference_session, model_metadata

    if (weights is None) == (model is None):
        raise UserError("give exactly one of -w CHECKPOINT or -m MODEL.onnx")
    if model is not None:
        session = inference_session(model, provider)
        meta = model_metadata(session, model)
        cfg = apply_protocol(_config(config, override), meta)
        classifier, names = OnnxClassifier(session), class_names(meta)
    else:
        loaded = _load_weights(weights, config, override)
        cfg, classifier, names = loaded.cfg, loaded.model, loaded.class_names
    if device:
        cfg.train.device = device
    if crop is not None:
        cfg.test.crop = crop
    if num_seg is not None:
        cfg.test.num_seg = num_seg
    if data_root is not None:
        cfg.data.root = str(data_root)
    if max_views_per_batch is not None:
        cfg.test.max_views_per_batch = max_views_per_batch
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
    for clip in result.excluded:
        err_console.print(f"[red]excluded:[/] {clip.reason}", highlight=False, soft_wrap=True)
    counted = (f"{result.num_videos} of {result.num_listed} videos ({len(result.excluded)} unreadable, excluded)"
               if result.excluded else f"{result.num_videos} videos")
    out_console.print(f"test: {counted}, {result.protocol}", soft_wrap=True, highlight=False)
    table = Table()
    for column in ("top-1", "top-5", "mean class acc"):
        table.add_column(column, justify="right")
    table.add_row(f"{result.top1:.2f}%", f"{result.top5:.2f}%", f"{result.mean_class:.2f}%")
    out_console.print(table)
    report = write_report(result, names, report_dir or (weights or model).parent
                          / f"test_{Path(list_file or cfg.data.test_list).stem}")
    _print_report(report)
    if metrics_json:
        metrics_json.write_text(json.dumps({**summary(result), "listed": result.num_listed,
                                            "excluded": [{"path": c.name, "reason": c.reason}
                                                         for c in result.excluded]}, indent=2))
    if result.excluded and not allow_missing:
        raise UserError(f"{len(result.excluded)} of {result.num_listed} videos could not be read and were "
                        "excluded (listed above); the metrics cover the rest; --allow-missing accepts this",
                        exit_code=1)


@app.command()
@cli_errors
def export(
    weights: Annotated[Path, typer.Option("--weights", "-w", help=WEIGHTS_HELP)],
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
    clips: Annotated[list[Path] | None, typer.Argument(help="Video files or frame folders to classify; a .txt "
                                                            "list of them ('<path> [label]' lines); any other "
                                                            "folder stands for every video under it.")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help=WEIGHTS_HELP)] = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", help="An ONNX model from 'tsnctl export'.")] = None,
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    topk: Annotated[int | None, typer.Option(help="How many classes to show per clip (default: 5; 1 with "
                                                  "--preset paddlevideo).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Class names file overriding the model's.")] = None,
    preset: Annotated[str, typer.Option(help="test: the model's test protocol; paddlevideo: the reference "
                                             "predict tool (centred segments, frames stretched to 341x256, "
                                             "TenCrop).")] = "test",
    num_seg: Annotated[int | None, typer.Option(help="Segments per clip (default: test.num_seg; 25 with --preset "
                                                     "paddlevideo).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON to stdout (one object per line "
                                                          "with --stream).")] = False,
    device: DeviceOpt = None,
    provider: Annotated[str, typer.Option(help="onnxruntime provider for -m: cpu, cuda or tensorrt.")] = "cpu",
    output: Annotated[Path | None, typer.Option("--output", help="Also write the predictions to this CSV file "
                                                "(one row per clip, or per prediction with --stream).")] = None,
    stream: Annotated[str | None, typer.Option(help="Classify a stream instead of clips: a webcam index (0), a "
                                                    "video file or an rtsp:// or http(s):// URL.")] = None,
    stride: Annotated[int, typer.Option(help="With --stream: frames between predictions.")] = 16,
    window: Annotated[int, typer.Option(help="With --stream: the last WINDOW frames are sampled for each "
                                             "prediction (default: 2 x the model's test segments).",
                                       show_default=False)] = 0,
    save_video: Annotated[Path | None, typer.Option(help="With --stream: write the frames with the latest "
                                                         "prediction drawn on them to this .mp4.")] = None,
) -> None:
    """Classify clips, folders of videos or a live stream; prints the top-k classes.

    The model is a checkpoint (-w) or an exported ONNX model (-m). With --stream, a prediction
    is printed every --stride frames over the last --window frames, until the stream ends
    (or Ctrl-C).
    """
    from tsnctl.data.dataset import ClipSettings
    from tsnctl.data.lists import read_labels
    from tsnctl.engine.loaders import resolve_device
    from tsnctl.predict import expand_clips, onnx_predictor, torch_predictor, write_predictions_csv
    from tsnctl.predict import predict as run

    if (weights is None) == (model is None):
        raise UserError("give exactly one of -w CHECKPOINT or -m MODEL.onnx")
    topk = topk if topk is not None else 1 if preset == "paddlevideo" else 5
    if topk < 1:
        raise UserError("--topk must be at least 1")
    if bool(clips) == (stream is not None):
        raise UserError("give clips to classify or --stream SOURCE (not both)")
    if stream is not None and (preset != "test" or num_seg is not None):
        raise UserError("--preset and --num-seg apply to clips, not to --stream")
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
    if stream is not None:
        _predict_stream(predictor, stream, stride, window, topk, names, save_video, output, as_json)
        return
    clips = expand_clips(clips, predictor.settings.image_template)
    with rich_progress() as progress:
        results = run(predictor, clips, topk, names, progress if len(clips) > 1 else _silent,
                      preset, num_seg)
    if output:
        write_predictions_csv(results, output)
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        _print_predictions(results)
    failed = [result for result in results if "error" in result]
    if failed:
        raise UserError(f"{len(failed)} of {len(results)} clips could not be read"
                        f"{' (see their error entries)' if as_json else ' (listed above)'}", exit_code=1)


@app.command()
@cli_errors
def check(
    list_file: Annotated[Path, typer.Argument(help="A frame list '<dir> <frames> <label>' or video list "
                                                   "'<path> <label>'.")],
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    fmt: Annotated[str | None, typer.Option("--format", help="frames or video (default: data.format).")] = None,
    root: Annotated[Path | None, typer.Option(help="Root of the list's paths (default: data.root, else the "
                                                   "list's folder).")] = None,
    report: Annotated[Path | None, typer.Option(help="CSV with one row per line: line, path, label, frames, "
                                                     "status, reason (default: ./<list name>_check.csv).")] = None,
    min_frames: Annotated[int | None, typer.Option(help="Clips with fewer frames are too short (default: "
                                                        "train.num_seg).")] = None,
    workers: Annotated[int, typer.Option(help="Clips checked in parallel.")] = min(4, os.cpu_count() or 1),
) -> None:
    """Validate a list before training: lines, labels, duplicates, missing or unreadable clips, class counts.

    Labels are checked against model.num_classes (-c CONFIG or -o model.num_classes=N). Exits 1 when any
    line has a problem (all are in the report CSV), 0 when every clip is usable.
    """
    from tsnctl.check import check_list

    cfg = _config(config, override)
    fmt = fmt or cfg.data.format
    if fmt not in ("frames", "video"):
        raise UserError(f"--format is {fmt!r}; choose one of frames, video")
    with rich_progress() as progress:
        result = check_list(list_file, fmt, root or cfg.data.root, cfg.model.num_classes, cfg.data.image_template,
                            min_frames if min_frames is not None else cfg.train.num_seg, cfg.test.num_seg,
                            workers, progress)
    report = report or Path(f"{list_file.stem}_check.csv")
    result.write_csv(report)
    counts = ", ".join(f"{label}: {n}" for label, n in sorted(result.class_counts.items()))
    if len(result.class_counts) > 20:
        (small, fewest), (large, most) = min(result.class_counts.items(), key=lambda kv: kv[1]), \
            max(result.class_counts.items(), key=lambda kv: kv[1])
        counts = f"clips per class from {fewest} (class {small}) to {most} (class {large})"
    out_console.print(f"{len(result.rows)} lines, {len(result.rows) - len(result.problems)} usable clips in "
                      f"{len(result.class_counts)} classes ({counts}); report {report}", soft_wrap=True,
                      highlight=False)
    if result.empty_classes:
        shown = ", ".join(map(str, result.empty_classes[:20]))
        more = " ..." if len(result.empty_classes) > 20 else ""
        err_console.print(f"[yellow]warning:[/] {len(result.empty_classes)} of {cfg.model.num_classes} classes "
                          f"have no usable clip: {shown}{more}", highlight=False, soft_wrap=True)
    for row in result.problems[:20]:
        err_console.print(f"[red]{row.status}:[/] {row.reason}", highlight=False, soft_wrap=True)
    if result.problems:
        more = f" (first 20 above, all in {report})" if len(result.problems) > 20 else f" (listed in {report})"
        raise UserError(f"{list_file}: {len(result.problems)} of {len(result.rows)} lines have problems{more}",
                        exit_code=1)


def _print_predictions(results: list[dict]) -> None:
    """A top-k table per clip; a red line for a clip that could not be read."""
    for result in results:
        if "error" in result:
            err_console.print(f"[red]failed:[/] {result['error']}", highlight=False, soft_wrap=True)
            continue
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


@app.command()
@cli_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of 'tsnctl train' (each with a metrics.csv).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Image to write (.png, .pdf or .svg; "
                                                "default: RUN_DIR/curves.png for one run, curves.png for "
                                                "several).")] = None,
) -> None:
    """Redraw the loss and top-1/top-5 curves of one run, or overlay several runs in one figure."""
    from tsnctl.plots import plot_runs

    target = output or (runs[0] / "curves.png" if len(runs) == 1 else Path("curves.png"))
    out_console.print(f"wrote {plot_runs(runs, target)}", highlight=False)


def _print_report(report, rows: int = 5) -> None:
    """The weakest classes and the most confused pairs of a test report, as Rich tables."""
    from tsnctl.reports import class_order

    weakest = Table(title="weakest classes (all: per_class.csv)", title_justify="left")
    for column, justify in (("class", "left"), ("videos", "right"), ("top-1", "right"), ("top-5", "right"),
                            ("most confused with", "left")):
        weakest.add_column(column, justify=justify)
    for c in [report.classes[i] for i in class_order(report) if report.classes[i].support][:rows]:
        weakest.add_row(c.name, str(c.support), f"{c.top1:.1f}%", f"{c.top5:.1f}%", c.confused_with)
    out_console.print(weakest)
    if report.pairs:
        pairs = Table(title="most confused pairs (all: confused_pairs.csv)", title_justify="left")
        for column, justify in (("true class", "left"), ("predicted as", "left"), ("videos", "right"),
                                ("share", "right")):
            pairs.add_column(column, justify=justify)
        for p in report.pairs[:rows]:
            pairs.add_row(p.true_name, p.predicted_name, str(p.count), f"{p.share:.1f}%")
        out_console.print(pairs)
    out_console.print(f"report -> {report.folder} (confusion.png, per_class.csv, confused_pairs.csv, "
                      "metrics.json)", highlight=False, soft_wrap=True)


def _predict_stream(predictor, source: str, stride: int, window: int, topk: int, names: list[str] | None,
                    save_video: Path | None, output: Path | None, as_json: bool) -> None:
    """Print each prediction of ``stream_predict`` as it comes (a line, or a JSON object per line)."""
    from tsnctl.predict import write_predictions_csv
    from tsnctl.stream import stream_predict

    window = window or 2 * predictor.settings.num_seg
    rows = []
    try:
        for p in stream_predict(predictor, source, window, stride, topk, names, save_video):
            row = {"frame": p.frame, "time": round(p.time, 3), "topk": p.topk}
            rows.append(row)
            if as_json:
                sys.stdout.write(json.dumps(row) + "\n")
                sys.stdout.flush()
            else:
                classes = "  ".join(f"{e['label']} {100 * e['prob']:.1f}%" for e in p.topk)
                out_console.print(f"frame {p.frame} ({p.time:.2f}s): {classes}", highlight=False, soft_wrap=True)
    finally:  # a live stream ends with Ctrl-C: keep what was predicted
        if output:
            write_predictions_csv(rows, output, ("frame", "time"))
    log.info("stream ended: %d prediction(s)%s", len(rows), f"; video -> {save_video}" if save_video else "")


bench_app = typer.Typer(help="Measure the data path, the model and frame extraction (tables, optional JSON).",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON to this file.")]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _write_json(path: Path | None, result: object) -> None:
    if path:
        import dataclasses

        path.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
        out_console.print(f"wrote {path}")


@bench_app.command("data")
@cli_errors
def bench_data(
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    formats: Annotated[str, typer.Option(help="Comma-separated: frames, video.")] = "frames,video",
    modes: Annotated[str, typer.Option(help="Comma-separated: train, valid, test.")] = "train,valid,test",
    min_time: Annotated[float, typer.Option(help="Seconds each pipeline runs per case.")] = 2.0,
    baseline: Annotated[bool, typer.Option(help="Run the reference's per-image path side by side.")] = True,
    device: Annotated[str, typer.Option("--device", help="Where batches are normalized: cpu, or cuda as in GPU "
                                                         "training (host-to-device copy included).")] = "cpu",
    json_file: JsonOpt = None,
) -> None:
    """Data path ms per sample by stage, on one core, against the reference's per-image path.

    Uses the config's lists when it names any, else generated 340x256 JPEG folders and H.264 clips."""
    from tsnctl.bench.data import bench_data as run

    cfg = _config(config, override)
    with rich_progress() as progress:
        result = run(cfg, _csv(formats), _csv(modes), min_time, baseline, device, progress)
    out_console.print(f"bench data on {result.source}; one core, ms per sample; batches normalized on "
                      f"{result.device}", highlight=False)
    stages = Table(title="stages (each timed alone)", title_justify="left")
    for column in ("format", "mode", "views", "read", "decode", "transform", "collate", "normalize"):
        stages.add_column(column, justify="left" if column in ("format", "mode") else "right")
    speed = Table(title="against the reference's per-image path, side by side", title_justify="left")
    for column in ("format", "mode", "loader", "+normalize", "samples/s", "reference", "speed-up", "loader only"):
        speed.add_column(column, justify="left" if column in ("format", "mode") else "right")
    for case in result.cases:
        stages.add_row(case.fmt, case.mode, case.views, *(_ms(case.stages_ms[k]) for k in
                       ("read", "decode", "transform", "collate", "normalize")))
        total = case.loader_ms + case.normalize_ms
        speed.add_row(case.fmt, case.mode, _ms(case.loader_ms), _ms(total), f"{1000 / total:.1f}",
                      _ms(case.baseline_ms), f"{case.speedup:.2f}x" if case.speedup else case.note or "-",
                      f"{case.speedup_loader:.2f}x" if case.speedup_loader else "-")
    out_console.print(stages)
    out_console.print(speed)
    _write_json(json_file, result)


@bench_app.command("model")
@cli_errors
def bench_model(
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Clips per step (default: train.batch_size on a GPU, "
                                                        "2 on a CPU).")] = None,
    num_seg: Annotated[int | None, typer.Option(help="Views per clip (default: train.num_seg).")] = None,
    min_time: Annotated[float, typer.Option(help="Seconds per measurement.")] = 3.0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (default: torch's choice).")] = 0,
    json_file: JsonOpt = None,
) -> None:
    """Images/s of the configured TSN: forward, and forward+backward+step; fp32, channels_last, autocast."""
    from tsnctl.bench.model import bench_model as run

    cfg = _config(config, override)
    with rich_progress() as progress:
        result = run(cfg, device, batch_size, num_seg, min_time, threads, progress)
    table = Table(title=f"bench model: {result.backbone} at {result.size}x{result.size}, {result.batch_size} "
                        f"clips x {result.num_seg} views, {result.device}, {result.threads} CPU threads",
                  title_justify="left")
    for column in ("variant", "forward img/s", "train step img/s", "note"):
        table.add_column(column, justify="right" if "img/s" in column else "left")
    for case in result.cases:
        table.add_row(case.variant, *(f"{v:.1f}" if v else "-" for v in (case.forward_ips, case.train_ips)),
                      case.note)
    out_console.print(table)
    _write_json(json_file, result)


@bench_app.command("extract")
@cli_errors
def bench_extract(
    repeats: Annotated[int, typer.Option(help="Runs per measurement (the best counts).")] = 3,
    json_file: JsonOpt = None,
) -> None:
    """Frames/s of extract-frames on one core, against 'ffmpeg -i clip.mp4 -q:v 2 img_%05d.jpg'."""
    from tsnctl.bench.extract import bench_extract as run

    with rich_progress() as progress:
        result = run(repeats, progress)
    table = Table(title=f"bench extract: {result.clip}, {result.frames} frames, one core", title_justify="left")
    for column in ("what", "frames/s", "note"):
        table.add_column(column, justify="right" if column == "frames/s" else "left")
    for case in result.cases:
        table.add_row(case.name, f"{case.frames_per_s:.1f}" if case.frames_per_s else "-", case.note)
    out_console.print(table)
    if result.ratio_to_ffmpeg:
        out_console.print(f"extract-frames / ffmpeg: {result.ratio_to_ffmpeg:.2f}x")
    _write_json(json_file, result)


def _extract_dry_run(src: Path, root: str, short_side: int, quality: int) -> None:
    from tsnctl.extract_estimate import estimate_extraction

    with rich_progress() as progress:
        est = estimate_extraction(src, root, short_side, quality, progress=progress)
    out_console.print(f"dry run: {est.videos} videos, ~{est.frames} frames, ~{est.total_bytes / 1e9:.2f} GB "
                      f"(~{est.bytes_per_frame / 1e3:.1f} KB per frame from {est.probed_frames} sample frames); "
                      "nothing written", highlight=False, soft_wrap=True)
    for _video, reason in est.unreadable:
        err_console.print(f"[red]unreadable:[/] {reason}", highlight=False)


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


@app.command("convert-weights")
@cli_errors
def convert_weights(
    src: Annotated[Path, typer.Argument(help="Weights to convert: a reference .pdparams, an MMAction2 TSN checkpoint, "
                                             "a torchvision ResNet state dict or a tsnctl checkpoint.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="tsnctl checkpoint (.pt) to write.")],
    labels: Annotated[Path | None, typer.Option(help="Class names file (default: the config's data.label_file, "
                                                     "else Kinetics-400 names for 400 classes).")] = None,
    config: ConfigOpt = None,
    override: Annotated[list[str] | None, typer.Option(
        "--override", help="Override a config value, e.g. --override model.num_classes=101 (repeatable; -o is the "
                           "output file here).")] = None,
) -> None:
    """Convert foreign weights into a tsnctl checkpoint (with config and class names) for test/export/predict -w."""
    from tsnctl.weights import convert_weights as run

    report = run(src, output, _config(config, override) if config else None, labels,
                 None if config else override)
    out_console.print(f"converted a {report.fmt} ({report.num_classes} classes, names from "
                      f"{report.class_names_from}) -> {report.output}", highlight=False)


def _silent(task: str, done: int, total: int, status: str = "") -> None:
    """No bar for a single clip."""


def main() -> None:
    app(prog_name="tsnctl")
