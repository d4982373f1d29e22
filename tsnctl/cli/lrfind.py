"""The ``lr-find`` command: a learning-rate range test over the training list of a config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tsnctl.cli.common import ConfigOpt, DeviceOpt, OverrideOpt, build_config, cli_errors, out_console, rich_progress


@cli_errors
def lr_find(
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    output: Annotated[Path, typer.Option("--output", help="Folder for lr_find.png and lr_find.csv.")] = Path("lr_find"),
    min_lr: Annotated[float, typer.Option("--min-lr", help="First learning rate of the sweep.")] = 1e-5,
    max_lr: Annotated[float, typer.Option("--max-lr", help="Last learning rate of the sweep.")] = 1.0,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps; the lr grows geometrically over them.")] = 100,
    device: DeviceOpt = None,
) -> None:
    """Plot training loss against a growing learning rate and suggest a peak lr for train.lr.

    Trains a throw-away model from the config's recipe while the lr grows from --min-lr to --max-lr,
    stopping when the loss diverges; writes lr_find.png and lr_find.csv. The suggestion is the lr where the
    smoothed loss falls fastest (as PyTorch Lightning's finder).
    """
    from tsnctl.engine.lr_find import lr_find as run_lr_find

    cfg = build_config(config, override, device)
    with rich_progress() as progress:
        result = run_lr_find(cfg, output, min_lr, max_lr, steps, progress)
    out_console.print(f"suggested lr: {result.suggested_lr:.3g} ({len(result.lrs)} steps, "
                      f"lr {result.lrs[0]:.2g} to {result.lrs[-1]:.2g}) -> {result.plot_path}, {result.csv_path.name}")
