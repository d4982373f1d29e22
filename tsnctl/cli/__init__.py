"""The ``tsnctl`` command line: parse options, build a config, call one library function, show results.

No logic lives here beyond presentation: everything a command does is callable from Python.
Exit codes: 0 ok, 1 failure while working, 2 bad usage or bad input.
"""

from __future__ import annotations

import gc
import logging
from typing import Annotated

import typer

from tsnctl import __version__
from tsnctl.cli import bench, data, evaluation, features, lrfind, predicting, serving, training
from tsnctl.cli.common import out_console, setup_logging

app = typer.Typer(help="Temporal Segment Networks for video action recognition: extract, train, test, export, "
                       "predict.", no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False)


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
    setup_logging(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


# Every command, in the order of --help; each is a plain function in the module named here.
app.command("demo-data")(data.demo_data)
app.command("split")(data.split)
app.command("extract-frames")(data.extract_frames)
app.command("train")(training.train)
app.command("test")(evaluation.test)
app.command("export")(evaluation.export)
app.command("predict")(predicting.predict)
app.command("features")(features.features)
app.command("serve")(serving.serve)
app.command("check")(data.check)
app.command("merge-lists")(data.merge_lists)
app.command("plot")(training.plot)
app.command("lr-find")(lrfind.lr_find)
app.command("convert-weights")(evaluation.convert_weights)
app.add_typer(bench.bench_app, name="bench")


def main() -> None:
    """The ``tsnctl`` console entry point: the process ends when it returns."""
    try:
        app(prog_name="tsnctl")
    finally:
        # The interpreter's last garbage collection walks every object alive, most of them torch's own:
        # ~0.4 s of a cold ``tsnctl predict`` (docs/benchmarks.md). Freezing them skips that walk; files are
        # closed by then and exit handlers still run.
        gc.freeze()
