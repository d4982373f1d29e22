"""Data commands: demo-data, extract-frames, merge-lists, check, split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tsnctl.cli.common import ConfigOpt, OverrideOpt, build_config, cli_errors, err_console, out_console, rich_progress
from tsnctl.errors import UserError


@cli_errors
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to write videos/, train and val lists and labels.txt into.")],
    train_per_class: Annotated[int, typer.Option(help="Training clips per class.")] = 30,
    val_per_class: Annotated[int, typer.Option(help="Validation clips per class.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed renders the same clips.")] = 0,
    kind: Annotated[str, typer.Option(help="shapes: 6 classes of moving shapes and textures; direction: 4 "
                                           "classes told apart only by the direction of motion (drift up/"
                                           "down, zoom in/out), which TSN cannot learn and TSM can; textures: 6 "
                                           "classes told apart by texture only; motion: 5 classes told apart "
                                           "by motion only (still, drift, spin, zoom, ripple).")] = "shapes",
) -> None:
    """Render a small synthetic action dataset as mp4 clips (--kind shapes, direction, textures or motion)."""
    from tsnctl.demo.data import make_demo_data

    with rich_progress() as progress:
        summary = make_demo_data(out, train_per_class, val_per_class, seed, progress, kind)
    out_console.print(f"wrote {summary.clips} clips of {len(summary.classes)} classes to {summary.root}: "
                      f"{summary.train_list.name}, {summary.val_list.name}, {summary.label_file.name}")


@cli_errors
def extract_frames(
    src: Annotated[Path, typer.Argument(help="A folder laid out class/video.mp4, or a video list '<path> <label>' "
                                             "(a line '<path> <label> <start_s> <end_s>' extracts that time range "
                                             "into OUT/<video path>_<start>-<end>s).")],
    out: Annotated[Path, typer.Argument(help="Output root: OUT/<video path>/img_00001.jpg ...")],
    list_file: Annotated[Path | None, typer.Option("--list-file", help="Frame list to write (default: "
                         "OUT/frame_list.txt for a folder, OUT/<list name>_frames.txt for a list).")] = None,
    root: Annotated[str, typer.Option(help="Folder the video list's paths are relative to (default: the "
                                           "list's folder).")] = "",
    workers: Annotated[int, typer.Option(help="Videos extracted in parallel, each decoded on one thread (the "
                                              "least CPU per frame); with 1, FFmpeg decodes on every core."
                                         )] = min(4, os.cpu_count() or 1),
    short_side: Annotated[int, typer.Option(help="Resize frames to this short side (aspect kept); 0 keeps the "
                                                 "size, as the reference.")] = 0,
    quality: Annotated[int, typer.Option(help="JPEG quality (the reference uses OpenCV's default, 95).")] = 95,
    shard: Annotated[str | None, typer.Option(help="Extract only shard I of N (I/N, 0 <= I < N) of the videos, "
                                                      "chosen by a hash of each video's path; join the shard lists "
                                                      "with 'tsnctl merge-lists'.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only estimate the frame count and disk use; "
                                                             "write nothing.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Extract again videos whose frame folder "
                                                                "is finished (default: skip them).")] = False,
) -> None:
    """Extract JPEG frame folders from videos and write a frame list '<frame_dir> <num_frames> <label>'.

    Re-running skips completed videos and finishes the rest; a per-video report goes to OUT.

    Runs on one OUT (shards, a second run) never write the same clip at once.
    """
    from tsnctl.prepare.extract import extract_frames as run
    from tsnctl.prepare.shards import parse_shard

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
    if summary.unlocked:
        err_console.print(f"[yellow]warning:[/] {out} does not support file locks: runs on overlapping videos "
                          "are not kept apart (shards of one --shard count never overlap)", soft_wrap=True)
    if summary.failed:
        for _video, reason in summary.failed:
            err_console.print(f"[red]failed:[/] {reason}", highlight=False, soft_wrap=True)
        raise UserError(f"{len(summary.failed)} of {len(summary.failed) + summary.videos} videos could not be "
                        "extracted (listed above); they are not in the frame list", exit_code=1)


def _extract_dry_run(src: Path, root: str, short_side: int, quality: int) -> None:
    from tsnctl.prepare.estimate import estimate_extraction

    with rich_progress() as progress:
        est = estimate_extraction(src, root, short_side, quality, progress=progress)
    out_console.print(f"dry run: {est.videos} videos, ~{est.frames} frames, ~{est.total_bytes / 1e9:.2f} GB "
                      f"(~{est.bytes_per_frame / 1e3:.1f} KB per frame from {est.probed_frames} sample frames); "
                      "nothing written", highlight=False, soft_wrap=True)
    for _video, reason in est.unreadable:
        err_console.print(f"[red]unreadable:[/] {reason}", highlight=False)


@cli_errors
def merge_lists(
    src: Annotated[Path, typer.Argument(help="The folder or video list extracted in shards (sets the order).")],
    shard_lists: Annotated[list[Path], typer.Argument(help="The frame lists written by 'extract-frames --shard'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Merged frame list to write.")],
    root: Annotated[str, typer.Option(help="Folder the video list's paths are relative to.")] = "",
    allow_missing: Annotated[bool, typer.Option(help="Merge even when some videos are in no shard list.")] = False,
) -> None:
    """Join the frame lists of sharded extractions into the list one machine would have written."""
    from tsnctl.prepare.extract import find_jobs
    from tsnctl.prepare.shards import merge_frame_lists
    from tsnctl.textfiles import write_atomic

    jobs, _ = find_jobs(src, root)
    lines = merge_frame_lists([job.folder for job in jobs], [str(p) for p in shard_lists], allow_missing)
    write_atomic(output, "".join(lines))
    out_console.print(f"merged {len(lines)} of {len(jobs)} videos from {len(shard_lists)} shard list(s) -> {output}")


@cli_errors
def check(
    list_file: Annotated[Path, typer.Argument(help="A frame list '<dir> <frames> <label>' or video list "
                                                   "'<path> <label>' (or '<path> <label> <start_s> <end_s>').")],
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
    from tsnctl.prepare.check import check_list

    cfg = build_config(config, override)
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


@cli_errors
def split(
    data_dir: Annotated[Path, typer.Argument(help="A folder laid out DATA_DIR/<class>/<clip>: video files or "
                                                  "frame folders (img_00001.jpg ...).")],
    val: Annotated[float, typer.Option(help="Fraction of each class's clips that go to val (0 < VAL < 1).")] = 0.2,
    group_by: Annotated[str | None, typer.Option("--group-by", help="Regular expression on the clip's file name "
                        "whose first capture group (else whole match) names its group; a group's clips go to one "
                        r"side, e.g. '_(g\d+)_' for UCF101's source videos.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same tree and seed give the same split.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the lists and labels.txt (default: "
                                                                 "DATA_DIR's parent); list paths are relative to "
                                                                 "it.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing list and label files.")] = False,
) -> None:
    """Write stratified train/val lists and labels.txt from a class-per-folder tree.

    Video trees give train_videos.txt and val_videos.txt ('<path> <label>'), frame-folder trees give
    train_frames.txt and val_frames.txt ('<frame_dir> <num_frames> <label>'); labels.txt holds '<id> <name>'
    with classes sorted by folder name. Paths are relative to the output folder, where extract-frames, check
    and train look by default.
    """
    from tsnctl.prepare.split import split_folder

    summary = split_folder(data_dir, out, val, group_by, seed, overwrite)
    for warning in summary.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    train, val_list, labels = summary.files
    out_console.print(f"{len(summary.classes)} classes: {summary.train} train clips -> {train}, {summary.val} val "
                      f"clips -> {val_list}; class names -> {labels}", highlight=False, soft_wrap=True)
