"""Server-side helpers without web framework imports: micro-batching of model calls, request errors, the
request body limit and the checks on a path a client names."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from pathlib import Path

import numpy as np
import torch

from tsnctl.data.decode import VIDEO_EXTENSIONS


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": reason}`` (one line); the server goes on."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, " ".join(reason.split())[:500]


class Batcher:
    """Gathers the views of concurrent requests into one model call.

    A worker thread takes the first waiting clip and every clip already waiting, then waits up to ``wait_s``
    for more, at most ``max_batch`` in all, and runs them as one ``[N, V, 3, H, W]`` batch: under load, N
    requests cost one call's fixed overhead instead of N. An idle server adds at most ``wait_s`` to a request.
    """

    def __init__(self, run: Callable[[torch.Tensor], np.ndarray], max_batch: int, wait_s: float) -> None:
        self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="tsnctl-batcher", daemon=True)
        self.thread.start()

    def submit(self, views: torch.Tensor) -> Future:
        """A future of ``(logits [C], batch size)`` for one clip's uint8 views ``[V, 3, H, W]``."""
        future: Future = Future()
        self.queue.put((views, future))
        return future

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            batch = [item]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:  # clips already waiting always join; new ones until the deadline
                    item = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[tuple[torch.Tensor, Future]]) -> None:
        try:
            logits = self.run(torch.stack([views for views, _ in batch]))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request, the thread goes on
            for _, future in batch:
                with suppress(InvalidStateError):  # the client went away
                    future.set_exception(exc)
            return
        for row, (_, future) in zip(logits, batch, strict=True):
            with suppress(InvalidStateError):
                future.set_result((row, len(batch)))


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before it is parsed or stored.

    A declared Content-Length over the limit is answered at once; a chunked body is counted as it comes.
    The rest of a refused body is read and dropped (up to ``DRAIN_FACTOR`` times the limit), so the client
    reads the 413 instead of a reset connection.
    """

    DRAIN_FACTOR = 16

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            await send_error(send, RequestError(400, f"bad Content-Length {length[:20]!r}"))
            return
        if int(length) > self.max_bytes:
            await self._drain(receive, 0)
            await send_error(send, self._too_big())
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body"):
                        await self._drain(receive, received)
                    raise self._too_big()
            return message

        await self.app(scope, limited_receive, send)

    def _too_big(self) -> RequestError:
        return RequestError(413, f"request body over the server's limit of {self.max_bytes / 2**20:g} MB (--max-mb)")

    async def _drain(self, receive, received: int) -> None:
        while received <= self.DRAIN_FACTOR * self.max_bytes:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return
            received += len(message.get("body", b""))


async def send_error(send, error: RequestError) -> None:
    """Answer a raw ASGI request with ``{"error": reason}``."""
    body = json.dumps({"error": error.reason}).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def allowed_path(text: object, allow_dirs: list[Path], max_bytes: int) -> Path:
    """The video file a client names by path (or ``file://`` URL), if it may be read: inside one of
    ``allow_dirs`` after following links, a regular file with a video extension, within the size limit."""
    if not allow_dirs:
        raise RequestError(403, "reading files on the server is off; start it with --allow-dir DIR")
    if not isinstance(text, str) or not text.strip() or "\x00" in text or len(text) > 4096:
        raise RequestError(400, "'path' must be a non-empty file path or file:// URL")
    if text.startswith("file://"):
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    elif "://" in text:
        raise RequestError(400, "only local paths and file:// URLs are read; upload other videos as 'file'")
    real = Path(os.path.realpath(allow_dirs[0] / text))  # an absolute path replaces the first folder
    if not any(real.is_relative_to(folder) for folder in allow_dirs):
        raise RequestError(403, f"{text}: outside the --allow-dir folders")
    if not real.exists():
        raise RequestError(404, f"{text}: no such file")
    if not real.is_file():
        raise RequestError(400, f"{text}: not a regular file")
    if real.suffix.lower() not in VIDEO_EXTENSIONS:
        raise RequestError(415, f"{text}: not a video file ({', '.join(VIDEO_EXTENSIONS)})")
    if real.stat().st_size > max_bytes:
        raise RequestError(413, f"{text}: over the server's limit of {max_bytes / 2**20:g} MB (--max-mb)")
    if real.stat().st_size == 0:
        raise RequestError(400, f"{text}: empty file")
    return real
