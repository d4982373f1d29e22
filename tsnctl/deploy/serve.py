"""``tsnctl serve``: an HTTP server answering clips with top-k JSON (FastAPI on uvicorn).

``POST /predict`` takes a multipart upload (field ``file``) or, with ``--allow-dir``, a path on the server
(JSON ``{"path": ...}`` or form field ``path``); ``GET /healthz`` says the model is loaded. Clips decode
in threads (at most ``2 x max_batch`` at once); their views meet in ``Batcher`` for one model call. A bad
request gets a 4xx and ``{"error": "<one line>"}``; nothing a client sends stops the server. The web
packages are imported only here, and only by ``tsnctl serve`` (``pip install 'tsnctl[serve]'``).
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint's ``Request`` annotation at run time.
import asyncio
import importlib.util
import json
import logging
import shutil
import socket
import tempfile
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tsnctl.data.decode import VIDEO_EXTENSIONS
from tsnctl.deploy.batching import Batcher, BodyLimit, RequestError, allowed_path
from tsnctl.deploy.predict import Predictor, clip_views, topk_entries
from tsnctl.errors import UserError

log = logging.getLogger("tsnctl")
PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_mb: float = 100.0  # largest request body / named file
    allow_dirs: list[Path] = field(default_factory=list)  # folders whose files clients may name; none: off
    topk: int = 5  # default of the ?topk= query parameter
    max_batch: int = 8  # clips per model call
    batch_wait_ms: float = 10.0  # how long the first clip of a batch waits for others

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 2**20)


def check_settings(settings: ServeSettings) -> ServeSettings:
    """Bad options as one line (exit 2), before the model loads; ``allow_dirs`` become real folders."""
    require_packages()
    if not 0 <= settings.port <= 65535:
        raise UserError(f"--port {settings.port}: expected 0 (any free port) to 65535")
    if not 0 < settings.max_mb <= 100_000:
        raise UserError(f"--max-mb {settings.max_mb:g}: expected more than 0 and at most 100000")
    if not 1 <= settings.max_batch <= 256:
        raise UserError(f"--max-batch {settings.max_batch}: expected 1 to 256")
    if not 0 <= settings.batch_wait_ms <= 1000:
        raise UserError(f"--batch-wait-ms {settings.batch_wait_ms:g}: expected 0 to 1000")
    if settings.topk < 1:
        raise UserError("--topk must be at least 1")
    for folder in settings.allow_dirs:
        if not folder.is_dir():
            raise UserError(f"--allow-dir {folder}: not a folder")
    settings.allow_dirs = [folder.resolve() for folder in settings.allow_dirs]
    return settings


def require_packages() -> None:
    missing = [pip for module, pip in PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(f"tsnctl serve needs {', '.join(missing)}: pip install 'tsnctl[serve]'", exit_code=1)


def serve(predictor: Predictor, settings: ServeSettings, ready: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C or SIGTERM; ``ready`` gets the URL once the port is bound (port 0: a free one)."""
    import uvicorn

    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    level = logging.getLogger("tsnctl").getEffectiveLevel()
    config = uvicorn.Config(create_app(predictor, settings), log_config=None, log_level=level,
                            access_log=level <= logging.DEBUG, timeout_graceful_shutdown=5)
    ready(f"http://{f'[{host}]' if ':' in host else host}:{port}")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: the normal way to stop
        pass
    log.info("server stopped")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or one line: exit 2 for a host that does not resolve, 1 for a busy port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"--host {host}: {getattr(exc, 'strerror', None) or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UserError(f"{host}:{port}: cannot listen ({exc.strerror or exc})", exit_code=1) from None
    return sock


def create_app(predictor: Predictor, settings: ServeSettings):
    """The FastAPI application (also usable with any ASGI server)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    batcher = Batcher(predictor.run, settings.max_batch, settings.batch_wait_ms / 1000)
    uploads = Path(tempfile.mkdtemp(prefix="tsnctl-serve-"))
    busy = asyncio.Semaphore(2 * settings.max_batch)  # clips being decoded or waiting for the model

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()
        shutil.rmtree(uploads, ignore_errors=True)

    app = FastAPI(title="tsnctl", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def request_error(request, exc: RequestError):
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": " ".join(str(exc.detail).split())}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return JSONResponse({"error": "bad request"}, status_code=400)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "classes": len(predictor.class_names), "max_batch": settings.max_batch}

    @app.post("/predict")
    async def predict(request: Request):
        topk = _topk(request.query_params.get("topk"), settings.topk)
        name, path, temporary = await _clip_file(request, settings, uploads, run_in_threadpool)
        try:
            async with busy:
                views = await run_in_threadpool(_decode, predictor, path, name)
                try:
                    logits, batch = await asyncio.wrap_future(batcher.submit(views))
                except Exception as exc:  # noqa: BLE001 - the model failed: 500, one line, the server goes on
                    log.warning("model failed on %s: %s", name, exc)
                    return JSONResponse({"error": f"model failed: {_first_line(exc)}"}, status_code=500)
        finally:
            if temporary:
                path.unlink(missing_ok=True)
        return {"clip": name, "topk": topk_entries(logits, predictor.class_names, topk), "batch": batch}

    return BodyLimit(app, settings.max_bytes)


def _topk(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise RequestError(400, f"topk={text[:20]!r}: expected an integer from 1 to 1000")
    return int(text)


async def _clip_file(request, settings: ServeSettings, uploads: Path, in_thread) -> tuple[str, Path, bool]:
    """``(name to answer with, file to decode, whether it is our temporary copy)`` of a request."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise RequestError(400, "the JSON body does not parse") from None
        if not isinstance(body, dict) or set(body) != {"path"}:
            raise RequestError(400, 'expected a JSON object {"path": "..."}')
        return body["path"], allowed_path(body["path"], settings.allow_dirs, settings.max_bytes), False
    if kind != "multipart/form-data":
        raise RequestError(415, "send multipart/form-data with a 'file' field, or JSON {\"path\": ...}")
    async with request.form(max_files=1, max_fields=1) as form:
        if set(form.keys()) == {"path"} and isinstance(form["path"], str):
            return form["path"], allowed_path(form["path"], settings.allow_dirs, settings.max_bytes), False
        upload = form.get("file")
        if set(form.keys()) != {"file"} or isinstance(upload, str) or upload is None:
            raise RequestError(400, "expected one multipart field: 'file' (a video upload) or 'path'")
        name = Path(upload.filename or "upload").name[:200]
        suffix = Path(name).suffix.lower()
        if suffix not in VIDEO_EXTENSIONS:
            raise RequestError(415, f"{name}: not a video file name ({', '.join(VIDEO_EXTENSIONS)})")
        path = Path(tempfile.mkstemp(suffix=suffix, dir=uploads)[1])
        try:
            size = await in_thread(_copy, upload.file, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if size == 0:
            path.unlink(missing_ok=True)
            raise RequestError(400, f"{name}: empty upload")
        return name, path, True


def _copy(source, path: Path) -> int:
    source.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
        return out.tell()


def _decode(predictor: Predictor, path: Path, name: str):
    """The clip's views with the model's test protocol; an unreadable video is the client's error (422)."""
    try:
        return clip_views(predictor, str(path))
    except UserError as exc:
        raise RequestError(422, f"{name}: {str(exc).replace(str(path), '').lstrip(': ')}") from None
    except Exception as exc:  # noqa: BLE001 - a decoder failure on hostile bytes is still the client's file
        raise RequestError(422, f"{name}: cannot decode ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
