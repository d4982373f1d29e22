"""The features command: pooled features before the fc, per clip or per segment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tsnctl.cli.common import (
    ConfigOpt,
    DeviceOpt,
    OverrideOpt,
    WeightsOpt,
    build_config,
    cli_errors,
    log,
    rich_progress,
)
from tsnctl.errors import UserError


@cli_errors
def features(
    clips: Annotated[list[Path], typer.Argument(help="Video files or frame folders; a .txt list of them ('<path> "
                                                     "[label]' lines); any other folder stands for every video "
                                                     "under it.")],
    weights: WeightsOpt = None,
    out: Annotated[Path, typer.Option("--out", help="The .npy to write (float32, one row per clip or segment), "
                                                    "with a .csv beside it naming each row's clip, segment, frame "
                                                    "and time; or a .parquet holding both in one table (needs "
                                                    "pyarrow: pip install 'tsnctl\\[parquet]').")
                   ] = Path("features.npy"),
    level: Annotated[str, typer.Option(help="video: one vector per clip (the mean over all test views: what "
                                            "the fc sees); segment: one per segment (mean over its crops).")
                     ] = "video",
    shard: Annotated[str | None, typer.Option(help="Only shard I of N (I/N) of the clips, chosen by a hash of "
                                                   "each clip's path, as extract-frames --shard; give each shard "
                                                   "its own --out.")] = None,
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Write the model's pooled features (before the fc) of clips, with the test protocol's views.

    A killed run continues where it stopped (finished clips are kept in OUT.part/); OUT (and a .npy's
    .csv) appear only when every clip is done. head.fc of a video-level row gives the clip's logits.
    """
    from tsnctl.data.splits import clip_settings
    from tsnctl.deploy.features import LEVELS, check_output, extract_features
    from tsnctl.deploy.predict import expand_clips
    from tsnctl.engine.loaders import resolve_device
    from tsnctl.prepare.shards import parse_shard
    from tsnctl.workflow import load_model

    if weights is None:
        raise UserError("give the model's weights with -w CHECKPOINT")
    if level not in LEVELS:
        raise UserError(f"--level {level!r}: choose one of {', '.join(LEVELS)}")
    check_output(out)
    shard_spec = parse_shard(shard) if shard else None
    loaded = load_model(weights, build_config(config, override) if config is not None else None, override)
    settings = clip_settings(loaded.cfg, "test")
    clips = expand_clips(clips, settings.image_template)
    with rich_progress() as progress:
        summary = extract_features(loaded.model, settings, clips, out, level, shard_spec,
                                   resolve_device(device or loaded.cfg.train.device), progress)
    if summary.failed:
        for _, reason in summary.failed[1:]:
            log.warning("unreadable: %s", reason)
        raise UserError(f"{len(summary.failed)} of {summary.clips} clips could not be read ({summary.failed[0][1]}"
                        f"{', more above' if len(summary.failed) > 1 else ''}); the others are kept in {out}.part/: "
                        "fix or drop those clips and run again", exit_code=1)
    log.info("%d x %d features of %d clips -> %s%s%s", summary.rows, summary.dim, summary.clips, out,
             f" (rows: {summary.index})" if summary.index else "",
             f"; {summary.resumed} clips from an earlier run" if summary.resumed else "")
