"""``bench data --decode-device``: the device data path (``data.decode_device=cuda``) against the CPU path.

Per clip, on the same clips and settings as ``bench data``:

- CPU path: a loader worker's share of building a batch (``ClipDataset.load_batch`` with its buffer in shared
  memory, as in a worker; CPU time, one core);
- worker: a loader worker's share on the device path (sample, read the JPEG bytes or decode the video, draw
  the plan; CPU time, one core);
- device: decoding and cropping a batch on the device (``device_batch``; wall time, synchronized).

With W worker cores the CPU path makes ``W / cpu_path`` clips per second and the device path
``min(W / worker, 1 / device)``; ``cores matched`` is how many cores of CPU-path workers one device keeps
up with. Host-to-device copies are in the device time (JPEG bytes, video frames), not in the CPU path's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tsnctl.bench.data import FORMATS, MODES, batch_size_of, bench_clips, views_label
from tsnctl.config import Config
from tsnctl.data.dataset import ClipDataset, ClipSettings
from tsnctl.data.device_path import device_batch, encode_clip
from tsnctl.data.lists import Sample
from tsnctl.data.sampling import sample_rng
from tsnctl.data.splits import clip_settings
from tsnctl.engine.loaders import resolve_device
from tsnctl.progress import ProgressFn, no_progress


@dataclass
class DeviceDataCase:
    fmt: str
    mode: str
    views: str  # e.g. "25 x 10 = 250"
    batch_size: int  # clips per device batch
    cpu_path_ms: float  # CPU path: a worker's share of load_batch, CPU ms per clip on one core
    worker_ms: float  # device path, loader worker: CPU ms per clip on one core
    device_ms: float  # device path, decode + crops of a batch on the device: wall ms per clip
    worker_speedup: float  # cpu_path_ms / worker_ms: how much less CPU work a clip needs
    cores_matched: float  # cpu_path_ms / device_ms: CPU-path worker cores one device keeps up with


@dataclass
class DeviceDataBench:
    source: str  # where the clips came from
    device: str  # where the device path decoded and cropped
    cases: list[DeviceDataCase] = field(default_factory=list)


def bench_device_data(cfg: Config, formats: tuple[str, ...] = FORMATS, modes: tuple[str, ...] = MODES,
                      device: str = "cuda", min_time: float = 2.0, progress: ProgressFn = no_progress
                      ) -> DeviceDataBench:
    """Measure each (format, mode) on the config's lists, or on generated 340x256 clips when it has none."""
    dev = resolve_device(device)
    with bench_clips(cfg, formats, modes) as (source, todo, lists):
        result = DeviceDataBench(source, str(dev))
        for done, (fmt, mode) in enumerate(todo):
            progress("bench data --decode-device", done, len(todo), f"{fmt} {mode}")
            result.cases.append(_device_case(lists[fmt, mode], clip_settings(cfg, mode, fmt), mode,
                                             batch_size_of(cfg, mode), dev, min_time))
        progress("bench data --decode-device", len(todo), len(todo), "")
        return result


def _device_case(samples: list[Sample], s: ClipSettings, mode: str, batch_size: int, dev: torch.device,
                 min_time: float) -> DeviceDataCase:
    n = len(samples)
    dataset = ClipDataset(samples, s)

    def cpu_batch(k: int) -> None:
        dataset.load_batch([(k * batch_size + j, (k * batch_size + j) % n) for j in range(batch_size)], shared=True)

    cpu_ms = _cpu_ms(cpu_batch, min_time) / batch_size
    worker_ms = _cpu_ms(lambda k: encode_clip(k % n, samples[k % n], s, sample_rng(0, k, k % n)), min_time)
    items = [encode_clip(k % n, samples[k % n], s, sample_rng(0, k, k % n)) for k in range(batch_size)]
    device_ms = _wall_ms(lambda: device_batch(items, dev, s.image_template), dev, min_time) / batch_size
    return DeviceDataCase(s.fmt, mode, views_label(s), batch_size, cpu_ms, worker_ms, device_ms, cpu_ms / worker_ms,
                          cpu_ms / device_ms)


def _cpu_ms(fn: Callable[[int], object], min_time: float) -> float:
    """CPU ms per call of ``fn(k)``, k = 0, 1, ..., over at least ``min_time`` s and 3 calls."""
    total, count = 0.0, 0
    while count < 3 or total < min_time:
        started = time.process_time()
        fn(count)
        total += time.process_time() - started
        count += 1
    return 1000 * total / count


def _wall_ms(fn: Callable[[], object], dev: torch.device, min_time: float) -> float:
    """Wall ms per call of ``fn`` after one warm-up call, the device synchronized before each reading."""
    fn()
    _sync(dev)
    count, started = 0, time.perf_counter()
    while count < 3 or time.perf_counter() - started < min_time:
        fn()
        count += 1
    _sync(dev)
    return 1000 * (time.perf_counter() - started) / count


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
