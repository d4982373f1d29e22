"""The serve command: an HTTP server classifying uploaded clips (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tsnctl.cli.common import (
    ConfigOpt,
    DeviceOpt,
    OverrideOpt,
    ProviderOpt,
    WeightsOpt,
    build_config,
    cli_errors,
    log,
    out_console,
)
from tsnctl.errors import UserError


@cli_errors
def serve(
    weights: WeightsOpt = None,
    model: Annotated[Path | None, typer.Option("--model", "-m", help="An ONNX model from 'tsnctl export'.")] = None,
    config: ConfigOpt = None,
    override: OverrideOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface; there is no "
                                           "authentication).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port, printed at start).")] = 8000,
    max_mb: Annotated[float, typer.Option(help="Largest request body or named file, in MB (bigger: 413).")] = 100.0,
    allow_dir: Annotated[list[Path] | None, typer.Option(help="Let clients name video files under this folder "
                                                              "by path instead of uploading them (repeatable; "
                                                              "default: uploads only).")] = None,
    topk: Annotated[int, typer.Option(help="Classes per answer unless the request asks ?topk=N.")] = 5,
    max_batch: Annotated[int | None, typer.Option(help="Concurrent clips run through the model in one call, at "
                                                       "most (default: 8 with --provider cuda/tensorrt or --device "
                                                       "cuda; else 1: on a CPU one clip's views already fill the "
                                                       "cores, see docs/benchmarks.md).",
                                                  show_default=False)] = None,
    batch_wait_ms: Annotated[float, typer.Option(help="How long the first clip of a batch waits for others "
                                                      "(ms).")] = 10.0,
    device: DeviceOpt = None,
    provider: ProviderOpt = "cpu",
    backend: Annotated[str, typer.Option(help="CPU inference of -w: fast or eager (as predict).")] = "fast",
) -> None:
    """Serve a model over HTTP: POST a clip to /predict, get the top-k classes as JSON; GET /healthz.

    Upload with 'curl -F file=@clip.mp4 http://127.0.0.1:8000/predict'; with --allow-dir, also
    '-H content-type:application/json -d {"path": "/data/clip.mp4"}'. Bad requests get a 4xx
    and {"error": "..."}; the server runs until Ctrl-C. Needs pip install 'tsnctl\\[serve]'.
    """
    from tsnctl.cli.predicting import _set_backend
    from tsnctl.deploy.serve import ServeSettings, check_settings
    from tsnctl.deploy.serve import serve as run
    from tsnctl.workflow import predictor as load_predictor

    if (weights is None) == (model is None):
        raise UserError("give exactly one of -w CHECKPOINT or -m MODEL.onnx")
    _set_backend(backend)
    if max_batch is None:
        on_gpu = (provider != "cpu") if model is not None else (device or "").startswith("cuda")
        max_batch = 8 if on_gpu else 1
    settings = check_settings(ServeSettings(host, port, max_mb, list(allow_dir or []), topk, max_batch,
                                            batch_wait_ms))
    predictor = load_predictor(weights, model, build_config(config, override) if config is not None else None,
                               override, provider, device, backend)

    def ready(url: str) -> None:
        out_console.print(f"serving {weights or model} on {url} (POST /predict, GET /healthz); Ctrl-C stops",
                          highlight=False, soft_wrap=True)
        out_console.file.flush()
        if settings.allow_dirs:
            log.info("clients may name files under: %s", ", ".join(map(str, settings.allow_dirs)))

    run(predictor, settings, ready)
