"""Requests per second of `tsnctl serve` with and without batching, side by side in one run.

    python benchmarks/serve_batching.py -m demo/run/model.onnx demo/data/videos/expanding_rings/val_000.mp4

Starts `tsnctl serve` on a free loopback port once with `--max-batch 1` and once with `--max-batch 8`
(alternating, `--rounds` times each), sends `--requests` uploads of the clip from `--clients` threads at
once, checks every answer (200 with top-k), and prints the median requests/s of each and their ratio,
plus how many requests shared a model call.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def start(model: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", "from tsnctl.cli import main; main()", "-q", "serve", "-m",
                             str(model), "--port", "0", "--max-batch", str(max_batch)],
                            stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    url = lines.get(timeout=300).split(" on ")[1].split()[0]
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=5).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not come up")


def upload(url: str, clip: Path) -> dict:
    boundary = "bench-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{clip.name}"\r\n\r\n'
            ).encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/predict", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=600) as answer:
        assert answer.status == 200
        result = json.loads(answer.read())
    assert result["topk"], result
    return result


def one_round(model: Path, clip: Path, max_batch: int, requests: int, clients: int) -> tuple[float, list[int]]:
    proc, url = start(model, max_batch)
    try:
        upload(url, clip)  # warm-up
        start_time = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda _: upload(url, clip), range(requests)))
        elapsed = time.perf_counter() - start_time
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    return requests / elapsed, [a["batch"] for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("-m", "--model", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {1: [], 8: []}
    batches: dict[int, list[int]] = {1: [], 8: []}
    for _ in range(args.rounds):
        for max_batch in rates:
            rate, sizes = one_round(args.model, args.clip, max_batch, args.requests, args.clients)
            rates[max_batch].append(rate)
            batches[max_batch].extend(sizes)
    for max_batch, values in rates.items():
        print(f"--max-batch {max_batch}: {statistics.median(values):.2f} requests/s (rounds: "
              f"{', '.join(f'{v:.2f}' for v in values)}); clips per model call: mean "
              f"{statistics.mean(batches[max_batch]):.2f}, max {max(batches[max_batch])}")
    print(f"batching speed-up: {statistics.median(rates[8]) / statistics.median(rates[1]):.2f}x "
          f"({args.requests} uploads from {args.clients} clients per round)")


if __name__ == "__main__":
    main()
