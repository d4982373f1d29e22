"""Evaluation and deployment commands: test, export, convert-weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tsnctl.cli.common import (
    WEIGHTS_HELP,
    ConfigOpt,
    DeviceOpt,
    GpusOpt,
    MasterAddrOpt,
    MasterPortOpt,
    NnodesOpt,
    NodeRankOpt,
    NprocOpt,
    OverrideOpt,
    ProviderOpt,
    RdzvOpt,
    WeightsOpt,
    build_config,
    cli_errors,
    console_ui,
    err_console,
    load_weights,
    out_console,
    rich_progress,
)
from tsnctl.errors import UserError


@cli_errors
def test(
    weights: WeightsOpt = None,
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="Or an ONNX model from 'tsnctl export' (own test protocol; -c gives the lists).",
    )] = None,
    provider: ProviderOpt = "cpu",
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
    from tsnctl.workflow import test_command

    cfg = build_config(config, override) if config is not None or model is not None else None
    values = {"train.device": device, "test.crop": crop, "test.num_seg": num_seg, "data.root": data_root,
              "test.max_views_per_batch": max_views_per_batch}
    layout = (gpus, nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint)
    run = test_command(weights, model, cfg, override, values, list_file, save_scores, report_dir, metrics_json,
                       provider, layout, console_ui())
    if run is None:
        return
    result = run.result
    _print_result(result)
    _print_report(run.report)
    if result.excluded and not allow_missing:
        raise UserError(f"{len(result.excluded)} of {result.num_listed} videos could not be read and were "
                        "excluded (listed above); the metrics cover the rest; --allow-missing accepts this",
                        exit_code=1)


def _print_result(result) -> None:
    """The unreadable videos (stderr), then the headline metrics as a table."""
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


def _print_report(report, rows: int = 5) -> None:
    """The weakest classes and the most confused pairs of a test report, as Rich tables."""
    from tsnctl.engine.reports import class_order

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
    int8: Annotated[bool, typer.Option("--int8", help="INT8 (onnxruntime static quantization, QDQ, per-channel "
                                                      "weights) calibrated on --calib-list; written only when its "
                                                      "top-1 on --val-list is at most --max-drop points below "
                                                      "fp32's.")] = False,
    calib_list: Annotated[Path | None, typer.Option(help="With --int8: list of clips (as for test) whose "
                                                         "activations set the INT8 ranges.")] = None,
    val_list: Annotated[Path | None, typer.Option(help="With --int8: list on which fp32 and INT8 top-1 are "
                                                       "compared (default: the config's data.val_list).")] = None,
    max_drop: Annotated[float, typer.Option(help="With --int8: largest accepted top-1 drop in points; a bigger "
                                                 "drop exits 1 and writes nothing.")] = 1.0,
    calib_clips: Annotated[int, typer.Option(help="With --int8: calibrate on at most this many clips, evenly "
                                                  "spread over --calib-list.")] = 100,
) -> None:
    """Export a checkpoint to ONNX (input [N, views, 3, H, W]) and verify it with onnxruntime; or to INT8."""
    from tsnctl.deploy.export import to_onnx

    if int8:
        _export_int8(weights, output, config, override, fp16, calib_list, val_list, max_drop, calib_clips)
        return
    if calib_list or val_list:
        raise UserError("--calib-list and --val-list go with --int8")
    report = to_onnx(load_weights(weights, config, override), output, fp16=fp16)
    out_console.print(f"exported {report.path} ({'fp16' if fp16 else 'fp32'}, input clips {report.input_shape}); "
                      f"onnx.checker ok; onnxruntime vs torch (fp32) max abs diff {report.max_abs_diff:.2e}")


def _export_int8(weights: Path, output: Path, config: Path | None, override: list[str] | None, fp16: bool,
                 calib_list: Path | None, val_list: Path | None, max_drop: float, calib_clips: int) -> None:
    """``export --int8``: quantize, compare top-1 with fp32, write only within ``max_drop``."""
    from tsnctl.deploy.quantize import check_max_drop, to_int8_onnx

    if fp16:
        raise UserError("--int8 and --fp16 exclude each other")
    if calib_list is None:
        raise UserError("--int8 needs --calib-list LIST (clips to calibrate the INT8 ranges on)")
    check_max_drop(max_drop)
    loaded = load_weights(weights, config, override)
    val_list = val_list or (Path(loaded.cfg.data.val_list) if loaded.cfg.data.val_list else None)
    if val_list is None:
        raise UserError("--int8 needs --val-list LIST (the model's config names no data.val_list)")
    with rich_progress() as progress:
        report = to_int8_onnx(loaded, output, calib_list, val_list, max_drop, calib_clips, progress)
    out_console.print(f"exported {report.path} (int8, {report.int8_mb:.1f} MB; fp32 {report.fp32_mb:.1f} MB); "
                      f"top-1 on {val_list} ({report.videos} videos): fp32 {report.fp32_top1:.2f}%, int8 "
                      f"{report.int8_top1:.2f}% (drop {report.drop:.2f} points, --max-drop {max_drop:g}); "
                      f"calibrated on {report.calib_clips} clips", highlight=False, soft_wrap=True)


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
    from tsnctl.weights.load import convert_weights as run

    report = run(src, output, build_config(config, override) if config else None, labels,
                 None if config else override)
    out_console.print(f"converted a {report.fmt} ({report.num_classes} classes, names from "
                      f"{report.class_names_from}) -> {report.output}", highlight=False)
