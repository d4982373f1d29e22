"""The device data path (``data.decode_device``) against the CPU path: same frame indices, boxes, flips and
view order, the same unreadable clips, and pixels within the resize's rounding.

Everything runs on the CPU here (torchvision decodes JPEGs on the CPU too); the ``cuda`` tests at the end
repeat the comparisons with nvJPEG and the GPU, and run the training and test loops with it.

Tolerances, measured on the CPU: torchvision's and simplejpeg's libjpeg-turbo decode to the same pixels;
OpenCV resizes in fixed point and torch in float32, so about one value in eight differs by 1 level per
resize: at most 1 for Scale + a fixed crop, 2 for Scale + MultiScaleCrop's resize.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tsnctl.bench.synthetic import render_frames, write_frame_folder, write_h264
from tsnctl.cli import app
from tsnctl.config import load_config
from tsnctl.data.dataset import ClipDataset, ClipSettings
from tsnctl.data.device_path import DeviceLoader, EncodedClipDataset, device_batch
from tsnctl.data.lists import Sample
from tsnctl.data.sampling import eval_indices, sample_rng, train_indices
from tsnctl.engine.loaders import clip_loader, resolve_decode_device, set_loader_epoch
from tsnctl.errors import UserError

CPU = torch.device("cpu")
CASES = [("train", "center", 2), ("test", "center", 1), ("test", "three", 1), ("test", "ten", 1)]  # max level diff


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Frame folders (to scale, already at the short side, shorter than the clip, grey JPEGs), an H.264 clip
    and three unreadable folders; natural-looking content so that a wrong frame, box or flip shows."""
    root = tmp_path_factory.mktemp("device")
    good = [Sample("a", write_frame_folder(root / "a", render_frames(14, 72, 96, seed=0)), 0, 14),
            Sample("b", write_frame_folder(root / "b", render_frames(9, 64, 80, seed=1)), 1, 9),
            Sample("c", write_frame_folder(root / "c", render_frames(2, 90, 70, seed=2)), 2, 2)]
    grey = root / "grey"
    grey.mkdir()
    for i, frame in enumerate(render_frames(5, 72, 96, seed=3)):
        cv2.imwrite(str(grey / f"img_{i + 1:05d}.jpg"), frame[..., 1])
    good.append(Sample("grey", grey, 0, 5))
    bad = []
    for name in ("missing", "corrupt", "truncated"):
        folder = write_frame_folder(root / name, render_frames(6, 72, 96, seed=4))
        bad.append(Sample(name, folder, 1, 6))
    (root / "missing" / "img_00004.jpg").unlink()  # the test clips read frames 2, 4 and 6
    (root / "corrupt" / "img_00002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    data = (root / "truncated" / "img_00006.jpg").read_bytes()  # a valid header: fails in the batch decode
    (root / "truncated" / "img_00006.jpg").write_bytes(data[: len(data) // 2])
    write_h264(root / "v.mp4", render_frames(30, 72, 96, seed=5))
    return {"frames": good, "bad": bad, "video": [Sample("v.mp4", root / "v.mp4", 1)]}


def settings(fmt: str, mode: str, crop: str, num_seg: int = 3) -> ClipSettings:
    return ClipSettings(fmt, num_seg, short_side=64, crop_size=56, mode=mode, crop=crop, seed=7)


def assert_close_pixels(ours: torch.Tensor, cpu: torch.Tensor, levels: int) -> None:
    assert ours.shape == cpu.shape and ours.dtype == cpu.dtype == torch.uint8
    diff = (ours.cpu().int() - cpu.int()).abs()
    assert diff.max() <= levels and diff.float().mean() < 0.25


@pytest.mark.parametrize("fmt", ["frames", "video"])
@pytest.mark.parametrize(("mode", "crop", "levels"), CASES)
def test_device_path_picks_what_the_cpu_path_picks(media, fmt, mode, crop, levels):
    s = settings(fmt, mode, crop)
    cpu, ours = ClipDataset(media[fmt], s), EncodedClipDataset(media[fmt], s)
    for epoch in range(4):
        for index, sample in enumerate(media[fmt]):
            item = ours[(epoch, index)]
            num_frames = sample.num_frames or 30
            rng = sample_rng(7, epoch, index)
            expected = train_indices(num_frames, 3, rng) if mode == "train" else eval_indices(num_frames, 3)
            assert item.indices == expected
            clips, labels, bad = device_batch([item], CPU)
            assert labels.tolist() == [sample.label] and not bad
            assert_close_pixels(clips[0], cpu[(epoch, index)][0], levels)


def test_unreadable_clips_get_the_cpu_paths_reasons(media):
    """Missing and corrupt files are found in the worker; a truncated one only by the decoder, which fails the
    whole batch: the clips are then decoded one by one and the bad one re-read on the CPU for its reason."""
    s = settings("frames", "test", "center")
    samples = media["bad"] + media["frames"]
    items = [EncodedClipDataset(samples, s)[i] for i in range(len(samples))]
    clips, labels, bad = device_batch(items, CPU)
    cpu = [ClipDataset(samples, s)[i] for i in range(len(samples))]
    assert bad == cpu[:3] and [b.name for b in bad] == ["missing", "corrupt", "truncated"]
    assert "img_00006.jpg" in bad[2].reason
    assert labels.tolist() == [label for _, label in cpu[3:]]
    assert_close_pixels(clips, torch.stack([clip for clip, _ in cpu[3:]]), 1)


@pytest.mark.parametrize("workers", [0, 1])
def test_device_loader_gives_the_cpu_loaders_batches(media, workers):
    samples = media["frames"] + media["bad"]
    s = settings("frames", "train", "center")
    cpu = clip_loader(samples, s, batch_size=3, num_workers=0, shuffle=True, seed=3)
    ours = clip_loader(samples, s, batch_size=3, num_workers=workers, shuffle=True, seed=3, decode_device=CPU)
    assert isinstance(ours, DeviceLoader) and (len(ours), ours.batch_size) == (len(cpu), 3)
    for epoch in (0, 1):
        set_loader_epoch(cpu, epoch)
        set_loader_epoch(ours, epoch)
        for (a, la, ba), (b, lb, bb) in zip(cpu, ours, strict=True):
            assert torch.equal(la, lb) and ba == bb
            assert_close_pixels(b, a, 2)


def test_the_test_loop_scores_device_batches_as_cpu_batches(media):
    from tsnctl.engine.evaluate import evaluate_all
    from tsnctl.models.tsn import TSN

    torch.manual_seed(0)
    model = TSN("resnet18", num_classes=3)
    samples = media["bad"][:1] + media["frames"]
    s = settings("frames", "test", "three")
    cpu = evaluate_all(model, clip_loader(samples, s, 2, 0), CPU)
    ours = evaluate_all(model, clip_loader(samples, s, 2, 0, decode_device=CPU), CPU)
    assert torch.equal(ours[1], cpu[1]) and ours[2] == cpu[2] and len(ours[2]) == 1
    torch.testing.assert_close(ours[0], cpu[0], atol=0.02, rtol=0.02)


def test_decode_device_cuda_needs_the_run_on_a_gpu(media, tmp_path):
    assert resolve_decode_device("cpu", torch.device("cuda")) is None
    with pytest.raises(UserError, match=r"data\.decode_device is cuda, but this run's device is cpu"):
        resolve_decode_device("cuda", CPU)
    with pytest.raises(UserError, match=r"data\.decode_device is 'gpu'; choose one of cpu, cuda"):
        load_config(None, ["data.decode_device=gpu"])


def test_bench_data_measures_the_device_path(media, tmp_path):
    lines = "".join(f"{s.path} {s.num_frames} {s.label}\n" for s in media["frames"])
    (tmp_path / "list.txt").write_text(lines)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "data", "-o", f"data.train_list={tmp_path / 'list.txt'}",
                                      "-o", f"data.test_list={tmp_path / 'list.txt'}", "-o", "data.short_side=64",
                                      "-o", "data.crop_size=56", "-o", "test.num_seg=3", "-o", "train.batch_size=2",
                                      "--formats", "frames", "--decode-device", "cpu", "--min-time", "0.05",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    cases = json.loads(out.read_text())["cases"]
    assert [(c["mode"], c["views"], c["batch_size"]) for c in cases] == [("train", "3", 2), ("test", "3 x 10 = 30", 1)]
    assert all(c["cpu_path_ms"] > 0 and c["worker_ms"] > 0 and c["device_ms"] > 0 for c in cases)


# --- GPUs (benchmarks/gpu.sh runs these with pytest -m cuda) -------------------------------------------------------
# nvJPEG is not libjpeg-turbo: its IDCT and chroma upsampling may round differently, so the GPU is held to the
# CPU path within a few levels on average, not bit for bit.

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def assert_close_jpeg(ours: torch.Tensor, cpu: torch.Tensor) -> None:
    assert ours.shape == cpu.shape and ours.dtype == torch.uint8 and ours.device.type == "cuda"
    diff = (ours.cpu().int() - cpu.int()).abs().float()
    assert diff.mean() < 1.5 and (diff > 8).float().mean() < 0.01, (diff.mean(), diff.max())


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("fmt", ["frames", "video"])
@pytest.mark.parametrize(("mode", "crop", "levels"), CASES)
def test_gpu_path_picks_what_the_cpu_path_picks(media, fmt, mode, crop, levels):
    s = settings(fmt, mode, crop)
    cpu, ours = ClipDataset(media[fmt], s), EncodedClipDataset(media[fmt], s)
    for epoch in range(3):
        items = [ours[(epoch, i)] for i in range(len(media[fmt]))]
        clips, labels, bad = device_batch(items, torch.device("cuda"))
        expected = [cpu[(epoch, i)] for i in range(len(media[fmt]))]
        assert not bad and labels.tolist() == [label for _, label in expected]
        assert_close_jpeg(clips, torch.stack([clip for clip, _ in expected]))
        if fmt == "video":  # decoded on the CPU: only the resize's rounding on the GPU differs
            assert_close_pixels(clips, torch.stack([clip for clip, _ in expected]), levels)


@pytest.mark.cuda
@needs_cuda
def test_gpu_path_reports_the_unreadable_clips(media):
    s = settings("frames", "test", "ten")
    samples = media["bad"] + media["frames"]
    items = [EncodedClipDataset(samples, s)[i] for i in range(len(samples))]
    clips, labels, bad = device_batch(items, torch.device("cuda"))
    cpu = [ClipDataset(samples, s)[i] for i in range(len(samples))]
    assert [b.name for b in bad][:2] == ["missing", "corrupt"]
    if len(bad) == 3:  # nvJPEG may decode a truncated file's first half where libjpeg-turbo refuses it
        assert bad == cpu[:3]
        assert_close_jpeg(clips, torch.stack([clip for clip, _ in cpu[3:]]))
    assert labels.tolist()[-len(cpu[3:]):] == [label for _, label in cpu[3:]]


@pytest.mark.cuda
@needs_cuda
def test_training_and_test_loops_with_decode_device_cuda(media, tmp_path):
    from tsnctl.engine.evaluate import run_test
    from tsnctl.engine.train import train
    from tsnctl.weights.init import build_model

    lines = "".join(f"{s.path} {s.num_frames} {i % 2}\n" for i, s in enumerate(media["frames"] * 2))
    (tmp_path / "list.txt").write_text(lines)
    overrides = [f"data.train_list={tmp_path / 'list.txt'}", f"data.test_list={tmp_path / 'list.txt'}",
                 "data.short_side=64", "data.crop_size=56", "data.num_workers=1", "model.backbone=resnet18",
                 "model.num_classes=2", "train.num_seg=3", "train.epochs=1", "train.batch_size=4",
                 "train.device=cuda", "test.num_seg=3", "test.crop=ten"]
    gpu_cfg = load_config(None, overrides + ["data.decode_device=cuda"])
    result = train(gpu_cfg, tmp_path / "run")
    assert len(result.step_losses) == 2 and all(np.isfinite(result.step_losses))
    model = build_model(gpu_cfg.model).cuda().eval()
    ours = run_test(model, gpu_cfg)
    cpu = run_test(model, load_config(None, overrides))
    assert ours.num_videos == cpu.num_videos == 8
    torch.testing.assert_close(ours.logits, cpu.logits, atol=0.05, rtol=0.05)
