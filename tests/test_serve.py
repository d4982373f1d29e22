"""tsnctl serve: a real server on loopback answers good and bad clips sent at once, and keeps running."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_checkpoint, write_video
from typer.testing import CliRunner

from tsnctl.cli import app

pytest.importorskip("fastapi")  # the 'serve' extra; 'make test' installs it with 'dev'
runner = CliRunner()
NAMES = ["a", "b", "c"]
TIMEOUT = 120  # seconds for any one request, and for the server to start or stop


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny exported model, clips good and bad, and a running 'tsnctl serve' on a free loopback port."""
    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    write_tiny_checkpoint(root / "model.pt", 2, "center", NAMES)
    result = runner.invoke(app, ["export", "-w", str(root / "model.pt"), "-o", str(root / "model.onnx")])
    assert result.exit_code == 0, result.output
    media = root / "media"
    write_video(media / "good.mp4", 12)
    write_video(media / "other.avi", 9, height=40, width=56)
    (media / "garbage.mp4").write_bytes(os.urandom(3000))
    (media / "empty.mp4").write_bytes(b"")
    (media / "notes.txt").write_text("not a video\n")
    (media / "big.mp4").write_bytes(os.urandom(80_000))  # over --max-mb 0.05 (52 kB)
    (root / "outside.mp4").write_bytes((media / "good.mp4").read_bytes())
    proc = subprocess.Popen([sys.executable, "-c", "from tsnctl.cli import main; main()", "serve", "-m",
                             str(root / "model.onnx"), "--port", "0", "--max-mb", "0.05", "--allow-dir", str(media),
                             "--topk", "2", "--max-batch", "8", "--batch-wait-ms", "20"],
                            stdout=subprocess.PIPE, stderr=(root / "server.err").open("w"), text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=TIMEOUT)
        assert "serving" in line, line
        url = line.split(" on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        health = request(url + "/healthz", None, {})
        assert health == (200, {"status": "ok", "classes": 3, "max_batch": 8})
        yield url, root, media, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=TIMEOUT) == 0  # Ctrl-C: a graceful stop, exit 0
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert "Traceback" not in (root / "server.err").read_text()


def request(url: str, body: bytes | None, headers: dict) -> tuple[int, dict]:
    """One HTTP call (GET without a body): the status and the JSON answer."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as answer:
        return answer.code, json.loads(answer.read())


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, dict]:
    boundary = "tsnctl-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(url: str, path: Path, field: str = "file", query: str = "") -> tuple[int, dict]:
    return request(url + "/predict" + query, *multipart(field, path.name, path.read_bytes()))


def by_path(url: str, path: str) -> tuple[int, dict]:
    return request(url + "/predict", json.dumps({"path": path}).encode(), {"Content-Type": "application/json"})


def test_good_and_bad_requests_at_once_all_get_their_answer(served):
    url, root, media, proc = served
    cases = [  # (what, call, expected status)
        *[(f"good {i}", lambda: upload(url, media / "good.mp4"), 200) for i in range(4)],
        ("good avi, topk 3", lambda: upload(url, media / "other.avi", query="?topk=3"), 200),
        ("good by path", lambda: by_path(url, str(media / "good.mp4")), 200),
        ("good by file URL", lambda: by_path(url, (media / "other.avi").as_uri()), 200),
        ("garbage bytes", lambda: upload(url, media / "garbage.mp4"), 422),
        ("empty upload", lambda: upload(url, media / "empty.mp4"), 400),
        ("not a video name", lambda: upload(url, media / "notes.txt"), 415),
        ("too big", lambda: upload(url, media / "big.mp4"), 413),
        ("wrong field", lambda: upload(url, media / "good.mp4", field="video"), 400),
        ("bad topk", lambda: upload(url, media / "good.mp4", query="?topk=zero"), 400),
        ("outside --allow-dir", lambda: by_path(url, str(root / "outside.mp4")), 403),
        ("escape by ..", lambda: by_path(url, str(media / ".." / "outside.mp4")), 403),
        ("missing path", lambda: by_path(url, str(media / "nope.mp4")), 404),
        ("a folder", lambda: by_path(url, str(media) + "/"), 400),
        ("not JSON", lambda: request(url + "/predict", b"{oops", {"Content-Type": "application/json"}), 400),
        ("plain text body", lambda: request(url + "/predict", b"hello", {"Content-Type": "text/plain"}), 415),
    ]
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        futures = [(what, pool.submit(call), status) for what, call, status in cases]
        answers = [(what, future.result(timeout=4 * TIMEOUT), status) for what, future, status in futures]
    for what, (status, body), expected in answers:
        assert status == expected, (what, status, body)
        if expected == 200:
            assert [entry["label"] in NAMES for entry in body["topk"]] == [True] * (3 if "topk 3" in what else 2)
            assert 1 <= body["batch"] <= 8 and 0 < sum(entry["prob"] for entry in body["topk"]) <= 1 + 1e-6
        else:
            assert set(body) == {"error"} and body["error"] and "\n" not in body["error"], (what, body)
    assert proc.poll() is None  # still running after every bad request
    status, body = upload(url, media / "good.mp4")
    assert status == 200 and body["clip"] == "good.mp4"
    assert [entry["label"] for entry in body["topk"]] == [entry["label"] for entry in answers[0][1][1]["topk"]]


def test_batcher_runs_waiting_clips_in_one_model_call():
    from tsnctl.deploy.batching import Batcher

    sizes, release = [], threading.Event()

    def run(clips):
        sizes.append(len(clips))
        release.wait(TIMEOUT)  # the first call holds the worker while three more clips queue up
        return clips.flatten(1).sum(1, keepdim=True).numpy()

    batcher = Batcher(run, max_batch=8, wait_s=0.0)
    first = batcher.submit(torch.ones(2, 3))
    while not sizes:
        threading.Event().wait(0.01)
    rest = [batcher.submit(torch.full((2, 3), float(i))) for i in range(3)]
    release.set()
    assert first.result(TIMEOUT)[1] == 1
    assert [f.result(TIMEOUT)[0].item() for f in rest] == [0.0, 6.0, 12.0]  # each clip gets its own row
    assert sizes == [1, 3]
    batcher.close()


def test_serve_without_the_web_packages_says_how_to_install(served, monkeypatch):
    monkeypatch.setattr("tsnctl.deploy.serve.PACKAGES", {"tsnctl_no_such_module": "fastapi"})
    result = runner.invoke(app, ["serve", "-m", str(served[1] / "model.onnx")])
    assert result.exit_code == 1 and "pip install 'tsnctl[serve]'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_serve_on_a_busy_port_and_bad_options_are_one_line(served):
    model = str(served[1] / "model.onnx")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = runner.invoke(app, ["serve", "-m", model, "--port", str(busy.getsockname()[1])])
    assert result.exit_code == 1 and "cannot listen" in result.output, result.output
    for args, message in [(["--max-mb", "0"], "--max-mb"), (["--allow-dir", "/no/such/dir"], "--allow-dir"),
                          (["--port", "70000"], "--port"), (["--max-batch", "0"], "--max-batch")]:
        result = runner.invoke(app, ["serve", "-m", model, *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
