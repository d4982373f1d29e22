"""The bench commands: data path, model, extraction, predict and exported-model speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tsnctl.cli.common import ConfigOpt, DeviceOpt, OverrideOpt, build_config, cli_errors, out_console, rich_progress
from tsnctl.errors import UserError

bench_app = typer.Typer(help="Measure the data path, the model, predict and frame extraction (tables, optional JSON).",
                        no_args_is_help=True)


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
    device: Annotated[str, typer.Option("--device", help="Where batches become model input (TenCrop views cut, "
                                                         "normalized): cpu, or cuda as in GPU training "
                                                         "(host-to-device copy included).")] = "cpu",
    decode_device: Annotated[str | None, typer.Option(
        "--decode-device", help="Instead: the device data path (data.decode_device) decoding and cropping on this "
                                "device (cuda; cpu runs it here), against the CPU worker path.")] = None,
    frame_sizes: Annotated[str, typer.Option(
        "--frame-sizes", "--frame-size",
        help="WIDTHxHEIGHT of the generated clips, or a comma-separated mix, one clip per size (e.g. Kinetics' "
             "340x256,256x455,480x360,320x240,257x301,640x360; or 1280x720 to try -o data.jpeg_dct_scale=true)."
    )] = "340x256",
    json_file: JsonOpt = None,
) -> None:
    """Data path ms per sample by stage, on one core, against the reference's per-image path.

    Uses the config's lists when it names any, else generated JPEG folders and H.264 clips (--frame-sizes).
    The loader's overhead is its time beyond the sum of the stages: what building the batch adds."""
    from tsnctl.bench.data import bench_data as run

    cfg = build_config(config, override)
    sizes = tuple(_frame_size(text) for text in _csv(frame_sizes))
    if not sizes:
        raise UserError("--frame-sizes: expected WIDTHxHEIGHT, or several separated by commas")
    if decode_device:
        _bench_device_data(cfg, formats, modes, decode_device, min_time, json_file)
        return
    with rich_progress() as progress:
        result = run(cfg, _csv(formats), _csv(modes), min_time, baseline, device, progress, sizes)
    out_console.print(f"bench data on {result.source}; one core, ms per sample; batches normalized on "
                      f"{result.device}", highlight=False)
    stages = Table(title="stages (each timed alone), and the loader's overhead: loader - (read + decode + transform)",
                   title_justify="left")
    for column in ("format", "mode", "views", "read", "decode", "transform", "loader", "overhead", "model input"):
        stages.add_column(column, justify="left" if column in ("format", "mode") else "right")
    speed = Table(title="against the reference's per-image path, side by side", title_justify="left")
    for column in ("format", "mode", "loader", "+model input", "samples/s", "reference", "speed-up", "loader only"):
        speed.add_column(column, justify="left" if column in ("format", "mode") else "right")
    for case in result.cases:
        share = 100 * case.overhead_ms / (case.loader_ms - case.overhead_ms)
        stages.add_row(case.fmt, case.mode, case.views,
                       *(_ms(case.stages_ms[k]) for k in ("read", "decode", "transform")), _ms(case.loader_ms),
                       f"{case.overhead_ms:.2f} ({share:.0f}%)", _ms(case.stages_ms["normalize"]))
        total = case.loader_ms + case.normalize_ms
        speed.add_row(case.fmt, case.mode, _ms(case.loader_ms), _ms(total), f"{1000 / total:.1f}",
                      _ms(case.baseline_ms), f"{case.speedup:.2f}x" if case.speedup else case.note or "-",
                      f"{case.speedup_loader:.2f}x" if case.speedup_loader else "-")
    out_console.print(stages)
    out_console.print(speed)
    _write_json(json_file, result)


def _bench_device_data(cfg, formats: str, modes: str, device: str, min_time: float, json_file: Path | None) -> None:
    from tsnctl.bench.device_data import bench_device_data

    with rich_progress() as progress:
        result = bench_device_data(cfg, _csv(formats), _csv(modes), device, min_time, progress)
    out_console.print(f"bench data --decode-device on {result.source}; ms per clip: CPU path and worker on one "
                      f"core (CPU time), device path on {result.device} (wall time)", highlight=False)
    table = Table(title="device data path against the CPU worker path", title_justify="left")
    for column in ("format", "mode", "views", "batch", "CPU path", "worker", "device", "clips/s", "speed-up",
                   "cores"):
        table.add_column(column, justify="left" if column in ("format", "mode") else "right")
    for case in result.cases:
        table.add_row(case.fmt, case.mode, case.views, str(case.batch_size), _ms(case.cpu_path_ms),
                      _ms(case.worker_ms), _ms(case.device_ms), f"{1000 / case.device_ms:.1f}",
                      f"{case.worker_speedup:.2f}x", f"{case.cores_matched:.1f}")
    out_console.print(table)
    _write_json(json_file, result)


def _frame_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) >= 64 and int(height) >= 64):
        raise UserError(f"--frame-sizes {text!r}: expected WIDTHxHEIGHT of at least 64x64, e.g. 1280x720")
    return int(width), int(height)


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

    cfg = build_config(config, override)
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
    """Frames/s of extract-frames on one core, against 'ffmpeg -i clip.mp4 -q:v 2 img_%05d.jpg'.

    ffmpeg is taken from the PATH, else from the imageio-ffmpeg package (pip install 'tsnctl\\[bench]').
    """
    from tsnctl.bench.extract import bench_extract as run

    with rich_progress() as progress:
        result = run(repeats, progress)
    table = Table(title=f"bench extract: {result.clip}, {result.frames} frames, one core", title_justify="left")
    for column in ("what", "frames/s", "note"):
        table.add_column(column, justify="right" if column == "frames/s" else "left")
    for case in result.cases:
        table.add_row(case.name, f"{case.frames_per_s:.1f}" if case.frames_per_s else "-", case.note)
    out_console.print(table)
    out_console.print(f"ffmpeg: {result.ffmpeg}")
    if result.ratio_to_ffmpeg:
        out_console.print(f"extract-frames / ffmpeg, frames per CPU-second: {result.ratio_to_ffmpeg:.2f}x")
    _write_json(json_file, result)


@bench_app.command("predict")
@cli_errors
def bench_predict(
    clip: Annotated[Path, typer.Argument(help="The video file or frame folder to classify.")],
    weights: Annotated[Path, typer.Option("--weights", "-w", help="A checkpoint (random weights time the same).")],
    config: ConfigOpt = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Also time this ONNX model (export of -w).")
                     ] = None,
    num_seg: Annotated[int | None, typer.Option(help="Segments per clip (default: the model's test.num_seg).")
                       ] = None,
    repeats: Annotated[int, typer.Option(help="Runs of each variant, alternating (the median counts).")] = 3,
    json_file: JsonOpt = None,
) -> None:
    """Seconds and peak memory of 'tsnctl predict' on one clip, a cold process per run: --backend eager (the
    model as trained) against the default fast backend (and -m), alternately; start-up, load, clip, model."""
    from tsnctl.bench.predict import STAGES
    from tsnctl.bench.predict import bench_predict as run

    with rich_progress() as progress:
        result = run(clip, weights, config, model, num_seg, repeats, progress)
    table = Table(title=f"bench predict: {result.clip}, median of {result.repeats} cold runs each, alternating "
                        "(clip: decode + transforms)", title_justify="left")
    for column in ("variant", "wall s", *(f"{s} s" for s in STAGES), "peak RSS MB", "/ eager"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for v in result.variants:
        table.add_row(v.name, *(f"{v.median_s[k]:.2f}" for k in ("wall", *STAGES)), f"{v.max_rss_mb:.0f}",
                      f"{v.ratio_to_eager:.2f}x")
    out_console.print(table)
    _write_json(json_file, result)



@bench_app.command("onnx")
@cli_errors
def bench_onnx(
    models: Annotated[list[Path], typer.Argument(help="ONNX models from 'tsnctl export' of one checkpoint, e.g. "
                                                      "fp32 then --int8 (ratios are to the first).")],
    batch: Annotated[int, typer.Option(help="Clips per call.")] = 1,
    repeats: Annotated[int, typer.Option(help="Calls of each model, alternating (the median counts).")] = 20,
    json_file: JsonOpt = None,
) -> None:
    """Milliseconds per call of exported models in onnxruntime on this CPU, side by side (e.g. INT8 vs fp32)."""
    from tsnctl.deploy.speed import bench_onnx as run

    with rich_progress() as progress:
        result = run(models, batch, repeats, progress)
    table = Table(title=f"bench onnx: input {result.input_shape}, median of {result.repeats} calls each, "
                        f"alternating; {result.threads} threads; load average {result.load_before:.1f} -> "
                        f"{result.load_after:.1f}", title_justify="left")
    for column in ("model", "precision", "MB", "ms per call", "clips/s", "speed-up"):
        table.add_column(column, justify="left" if column in ("model", "precision") else "right")
    for case in result.cases:
        table.add_row(case.path, case.precision, f"{case.size_mb:.1f}", f"{case.median_ms:.1f}",
                      f"{case.clips_per_s:.2f}", f"{case.speedup:.2f}x")
    out_console.print(table)
    _write_json(json_file, result)
