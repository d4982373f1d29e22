"""Training commands: train, plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tsnctl.cli.common import (
    AccumulateOpt,
    AmpOpt,
    AutoScaleLrOpt,
    ChannelsLastOpt,
    CompileOpt,
    ConfigOpt,
    DeviceOpt,
    GpusOpt,
    InitFromOpt,
    MasterAddrOpt,
    MasterPortOpt,
    NnodesOpt,
    NodeRankOpt,
    NprocOpt,
    OverrideOpt,
    RdzvOpt,
    SyncBnOpt,
    build_config,
    cli_errors,
    out_console,
    rich_progress,
    run_on_ranks,
    set_train_features,
)


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
    init_from: InitFromOpt = None,
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
    from tsnctl.launch import train_entry
    from tsnctl.weights.init import fetch_init_weights

    cfg = build_config(config, override, device)
    set_train_features(cfg, amp, channels_last, accumulate, compile_model, sync_bn, auto_scale_lr)
    if max_bad_fraction is not None:
        cfg.train.max_bad_fraction = max_bad_fraction
        validate_config(cfg)
    if init_from is not None:
        cfg.model.init_from = init_from
    if cfg.model.init_from:  # a published name is fetched once, here, before any rank starts
        with rich_progress() as progress:
            fetch_init_weights(cfg.model, progress)
    output = output or Path("runs") / (config.stem if config else "default")
    layout = (gpus, nproc, nnodes, node_rank, master_addr, master_port, rdzv_endpoint)
    resume_arg = str(resume_from) if resume_from else resume
    result = run_on_ranks(cfg, layout, train_entry, str(output), validate, resume_arg)
    if result is None:
        return
    best = f", best valid top-1 {result.best_top1:.2f}%" if result.best_top1 is not None else ""
    out_console.print(f"trained {result.epochs_run} epoch(s){best} -> {result.output_dir}")


@cli_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of 'tsnctl train' (each with a metrics.csv).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Image to write (.png, .pdf or .svg; "
                                                "default: RUN_DIR/curves.png for one run, curves.png for "
                                                "several).")] = None,
) -> None:
    """Redraw the loss and top-1/top-5 curves of one run, or overlay several runs in one figure."""
    from tsnctl.engine.plots import plot_runs

    target = output or (runs[0] / "curves.png" if len(runs) == 1 else Path("curves.png"))
    out_console.print(f"wrote {plot_runs(runs, target)}", highlight=False)
