"""The predict command: clips, folders, lists and live streams."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tsnctl.cli.common import (
    ConfigOpt,
    DeviceOpt,
    OverrideOpt,
    ProviderOpt,
    WeightsOpt,
    build_config,
    cli_errors,
    err_console,
    log,
    out_console,
    rich_progress,
    silent,
)
from tsnctl.errors import UserError

BackendOpt = Annotated[str, typer.Option(help="CPU inference of -w: fast (BatchNorm and input normalization "
                                              "folded into the convolutions, NHWC, views in chunks; same logits "
                                              "within 1e-4) or eager (the model as trained).")]
OutputOpt = Annotated[Path | None, typer.Option("--output", help="Also write the predictions to this CSV file "
                                                "(one row per clip, or per prediction with --stream); with "
                                                "--timeline, the folder for its files.")]
StreamOpt = Annotated[str | None, typer.Option(help="Classify a stream instead of clips: a webcam index (0), a "
                                                    "video file or an rtsp:// or http(s):// URL.")]
StrideOpt = Annotated[str | None, typer.Option(
    help="With --stream or --timeline: the step between predictions, in frames (16) or seconds (0.5s, 500ms) "
         "(default: 16 frames with --stream, 0.5s with --timeline).", show_default=False)]
WindowOpt = Annotated[str | None, typer.Option(
    help="With --stream or --timeline: each prediction samples the last WINDOW frames (16) or seconds (2s) "
         "(default: 2 x the model's test segments with --stream, 2s with --timeline).", show_default=False)]
TimelineOpt = Annotated[bool, typer.Option(
    "--timeline", help="Score one long video (or --stream) window by window and merge the windows into "
                       "segments: windows.csv, segments.csv, segments.srt, timeline.json and timeline.png go to "
                       "the --output folder (default: ./<video name>_timeline).")]
SmoothOpt = Annotated[int, typer.Option(help="With --timeline: average the window probabilities over this many "
                                             "windows before labelling (1: no smoothing).")]
ThresholdOpt = Annotated[float, typer.Option(help="With --timeline: drop segments whose mean probability is "
                                                  "below this.")]
SaveVideoOpt = Annotated[Path | None, typer.Option(
    help="With --stream: write the frames with the latest prediction drawn on them to this .mp4; with "
         "--timeline (a video file): the frames with their segment's label.")]


@cli_errors
def predict(
    clips: Annotated[list[Path] | None, typer.Argument(help="Video files or frame folders to classify; a .txt "
                                                            "list of them ('<path> [label]' lines); any other "
                                                            "folder stands for every video under it.")] = None,
    weights: WeightsOpt = None,
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
    provider: ProviderOpt = "cpu",
    backend: BackendOpt = "fast",
    output: OutputOpt = None,
    stream: StreamOpt = None,
    stride: StrideOpt = None,
    window: WindowOpt = None,
    timeline: TimelineOpt = False,
    smooth: SmoothOpt = 1,
    threshold: ThresholdOpt = 0.0,
    save_video: SaveVideoOpt = None,
) -> None:
    """Classify clips, folders of videos or a live stream; prints the top-k classes.

    The model is a checkpoint (-w) or an exported ONNX model (-m). With --stream, a prediction
    is printed every --stride frames over the last --window frames, until the stream ends
    (or Ctrl-C). With --timeline, one long video (or the stream) is scored window by window and the
    windows are merged into labelled segments (docs/timeline.md).
    """
    _set_backend(backend)
    from tsnctl.data.lists import read_labels
    from tsnctl.deploy.predict import expand_clips
    from tsnctl.deploy.predict import predict as run
    from tsnctl.workflow import predictor as load_predictor

    topk = _checked_topk(weights is not None, model is not None, topk, preset, bool(clips), stream is not None,
                         num_seg)
    spans = _checked_timeline(timeline, clips, stream, window, stride, smooth, threshold, preset, num_seg)
    predictor = load_predictor(weights, model, build_config(config, override) if config is not None else None,
                               override, provider, device, backend)
    names = read_labels(labels) if labels else None
    if timeline:
        return _predict_timeline(predictor, stream or str(clips[0]), stream is not None, spans, smooth, threshold,
                                 names, output, save_video, as_json)
    if stream is not None:
        return _predict_stream(predictor, stream, *spans, topk, names, save_video, output, as_json)
    clips = expand_clips(clips, predictor.settings.image_template)
    with rich_progress() as progress:
        results = run(predictor, clips, topk, names, progress if len(clips) > 1 else silent,
                      preset, num_seg)
    _show_predictions(results, output, as_json)


def _set_backend(backend: str) -> None:
    """Check ``--backend``. For ``fast``, before torch loads OpenMP, its threads are set to sleep between
    operations instead of spinning: with more busy threads than cores, spinning threads hold the cores the
    others wait for (measured: 2.5x slower)."""
    if backend == "fast":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tsnctl.deploy.infer import BACKENDS

    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")

def _show_predictions(results: list[dict], output: Path | None, as_json: bool) -> None:
    """Write the CSV, print JSON or tables, and fail (exit 1) when some clips could not be read."""
    from tsnctl.deploy.predict import write_predictions_csv

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


def _checked_topk(has_weights: bool, has_model: bool, topk: int | None, preset: str, has_clips: bool,
                  has_stream: bool, num_seg: int | None) -> int:
    """The options that contradict each other, checked before any model loads; returns the top-k to show."""
    if has_weights == has_model:
        raise UserError("give exactly one of -w CHECKPOINT or -m MODEL.onnx")
    topk = topk if topk is not None else 1 if preset == "paddlevideo" else 5
    if topk < 1:
        raise UserError("--topk must be at least 1")
    if has_clips == has_stream:
        raise UserError("give clips to classify or --stream SOURCE (not both)")
    if has_stream and (preset != "test" or num_seg is not None):
        raise UserError("--preset and --num-seg apply to clips, not to --stream")
    return topk


def _checked_timeline(timeline: bool, clips: list[Path] | None, stream: str | None, window: str | None,
                      stride: str | None, smooth: int, threshold: float, preset: str, num_seg: int | None) -> tuple:
    """The --timeline and --stream options, checked before any model loads; returns (window, stride) as
    ``Span``s (window None: the stream's default)."""
    from tsnctl.deploy.timeline import parse_span

    if not timeline and stream is None and (window or stride):
        raise UserError("--window and --stride apply to --stream or --timeline")
    if not timeline and (smooth != 1 or threshold != 0.0):
        raise UserError("--smooth and --threshold apply to --timeline")
    if timeline and (preset != "test" or num_seg is not None):
        raise UserError("--preset and --num-seg apply to clips, not to --timeline (it uses the test protocol)")
    if timeline and stream is None and len(clips or []) != 1:
        raise UserError("--timeline scores one video: give exactly one (or --stream SOURCE)")
    if smooth < 1:
        raise UserError(f"--smooth {smooth}: must be at least 1 (1: no smoothing)")
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold}: must be a probability between 0 and 1")
    if timeline:
        return parse_span(window or "2s", "--window"), parse_span(stride or "0.5s", "--stride")
    return parse_span(window, "--window") if window else None, parse_span(stride or "16", "--stride")


def _predict_timeline(predictor, source: str, is_stream: bool, spans: tuple, smooth: int, threshold: float,
                      names: list[str] | None, output: Path | None, save_video: Path | None, as_json: bool) -> None:
    """Run ``predict_timeline`` and print its segments (a table, or the timeline.json object)."""
    from tsnctl.deploy.timeline_out import predict_timeline

    out = output or Path(f"{Path(source).stem if not is_stream else 'stream'}_timeline")
    with rich_progress() as progress:
        result = predict_timeline(predictor, source, out, *spans, smooth, threshold, names, is_stream,
                                  save_video, progress)
    if as_json:
        sys.stdout.write((out / "timeline.json").read_text())
        return
    table = Table(title=f"{source}: {len(result.windows)} windows, {len(result.segments)} segments",
                  title_justify="left")
    for column in ("start", "end", "label", "score"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for seg in result.segments:
        table.add_row(f"{seg.start:.2f}", f"{seg.end:.2f}", seg.label, f"{seg.score:.3f}")
    out_console.print(table)
    log.info("timeline -> %s (%s)", out, ", ".join(p.name for p in result.files))


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


def _predict_stream(predictor, source: str, window, stride, topk: int, names: list[str] | None,
                    save_video: Path | None, output: Path | None, as_json: bool) -> None:
    """Print each prediction of ``stream_predict`` as it comes (a line, or a JSON object per line)."""
    from tsnctl.deploy.predict import write_predictions_csv
    from tsnctl.deploy.stream import stream_predict

    window = window or 2 * predictor.settings.num_seg  # window, stride: Spans (frames or seconds)
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
