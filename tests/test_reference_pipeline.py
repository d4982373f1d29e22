"""tsnctl's test, valid and predict inputs equal an independent re-implementation of the reference pipeline.

The reference (PaddleVideo ``tsn_k400_frames.yaml`` and its predict tool) is re-implemented here from its
description, without tsnctl code: PIL decoding, ``cv2.resize`` per image with the reference's Scale
rounding and skip, PIL crops and flips in TenCrop order, float32 normalisation. Then ``tsnctl test`` and
``tsnctl predict`` with a reference-format checkpoint must give the source model's outputs on those inputs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from test_weight_import import random_resnet50, reference_state, write_pdparams
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.data.dataset import ClipSettings, load_clip
from tsnctl.data.lists import Sample, read_labels
from tsnctl.data.transforms import normalize
from tsnctl.deploy.predict import paddlevideo_views
from tsnctl.weights.load import KINETICS400_LABELS

MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1).astype(np.float32)
STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1).astype(np.float32)


# --- the independent reference pipeline ---------------------------------------------------------

def ref_indices(num_frames: int, num_seg: int) -> list[int]:
    """Sampler(valid_mode=True, select_left=True): the middle of each float-sized segment, 0-based."""
    step = num_frames / num_seg
    return [int(step / 2.0 + step * x) for x in range(num_seg)]


def ref_scale(img: Image.Image, short: int) -> Image.Image:
    """Scale(short_size, fixed_ratio=False, do_round=True, backend='cv2')."""
    w, h = img.size
    if (w <= h and w == short) or (h <= w and h == short):
        return img
    factor = short / w if w <= h else short / h
    ow, oh = int(w * factor + 0.5), int(h * factor + 0.5)
    return Image.fromarray(cv2.resize(np.asarray(img), (ow, oh), interpolation=cv2.INTER_LINEAR))


def ref_stretch(img: Image.Image, short: int) -> Image.Image:
    """The predict tool's Scale(fixed_ratio=True): a 4:3 frame, aspect ratio not kept."""
    w, h = img.size
    if (w <= h and w == short) or (h <= w and h == short):
        return img
    ow, oh = (short, int(short * 4.0 / 3.0)) if w <= h else (int(short * 4.0 / 3.0), short)
    return Image.fromarray(cv2.resize(np.asarray(img), (ow, oh), interpolation=cv2.INTER_LINEAR))


def ref_ten_crop(imgs: list[Image.Image], size: int) -> list[Image.Image]:
    w, h = imgs[0].size
    ws, hs = (w - size) // 4, (h - size) // 4
    out = []
    for x, y in [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]:
        crops = [img.crop((x, y, x + size, y + size)) for img in imgs]
        out += crops + [c.transpose(Image.FLIP_LEFT_RIGHT) for c in crops]
    return out


def ref_center_crop(imgs: list[Image.Image], size: int) -> list[Image.Image]:
    """CenterCrop(do_round=False), as the reference's valid pipeline."""
    w, h = imgs[0].size
    x, y = (w - size) // 2, (h - size) // 2
    return [img.crop((x, y, x + size, y + size)) for img in imgs]


def ref_normalize(imgs: list[Image.Image]) -> np.ndarray:
    """Image2Array then Normalization: ``[T, 3, H, W]`` float32."""
    arr = np.stack([np.asarray(img) for img in imgs]).astype("float32").transpose(0, 3, 1, 2)
    arr = arr / 255.0
    arr -= MEAN
    arr /= STD
    return arr


def ref_inputs(folder: Path, num_frames: int, num_seg: int, short: int, size: int, crop: str) -> np.ndarray:
    imgs = [Image.open(folder / f"img_{i + 1:05d}.jpg").convert("RGB") for i in ref_indices(num_frames, num_seg)]
    imgs = [ref_scale(img, short) for img in imgs]
    return ref_normalize(ref_ten_crop(imgs, size) if crop == "ten" else ref_center_crop(imgs, size))


# --- media ---------------------------------------------------------------------------------------

def textured_frames(num_frames: int, width: int, height: int, seed: int) -> list[np.ndarray]:
    """Smooth random RGB images, so that interpolation and crop positions change every pixel value."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(num_frames):
        noise = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
        frames.append(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC))
    return frames


def write_frame_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{i + 1:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@pytest.mark.parametrize(("width", "height"), [(320, 240), (455, 256), (240, 320), (257, 301)])
@pytest.mark.parametrize("crop", ["ten", "center"])
def test_test_and_valid_inputs_equal_the_reference(tmp_path, width, height, crop):
    folder = write_frame_folder(tmp_path / "clip", textured_frames(7, width, height, seed=width))
    expected = ref_inputs(folder, 7, 3, 256, 224, crop)
    settings = ClipSettings("frames", 3, 256, 224, crop=crop)
    got = normalize(load_clip(Sample("clip", folder, 0, 7), settings, np.random.default_rng(0))).numpy()
    assert got.shape == expected.shape == ((30 if crop == "ten" else 3), 3, 224, 224)
    assert np.abs(got - expected).max() == 0.0


def test_paddlevideo_predict_inputs_equal_the_reference(tmp_path):
    frames = textured_frames(13, 400, 240, seed=3)  # not 4:3, so stretching differs from Scale
    folder = write_frame_folder(tmp_path / "clip", frames)
    imgs = [Image.open(folder / f"img_{i + 1:05d}.jpg").convert("RGB") for i in ref_indices(13, 4)]
    expected = ref_normalize(ref_ten_crop([ref_stretch(img, 256) for img in imgs], 224))
    got = normalize(paddlevideo_views(Sample("clip", folder, 0, 13), "frames", 4)).numpy()
    assert got.shape == (40, 3, 224, 224)
    assert np.abs(got - expected).max() == 0.0


# --- end to end: tsnctl test / predict with a reference checkpoint -----------------------------

def source_scores(resnet: torch.nn.Module, views: np.ndarray) -> np.ndarray:
    """The source torchvision model on the reference inputs: features averaged over views, then fc."""
    trunk = torch.nn.Sequential(*list(resnet.children())[:-1])
    with torch.no_grad():
        return resnet.fc(trunk(torch.from_numpy(views)).flatten(1).mean(0)).numpy()


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory):
    resnet = random_resnet50(seed=5)
    trunk = torch.nn.Sequential(*list(resnet.children())[:-1])
    with torch.no_grad():  # moderate logits, so that softmax stays sensitive to the inputs
        features = trunk(torch.randn(4, 3, 56, 56, generator=torch.Generator().manual_seed(0))).flatten(1).mean(0)
        resnet.fc.weight.mul_(3.0 / (resnet.fc.weight @ features).std())
    path = write_pdparams(tmp_path_factory.mktemp("ckpt") / "TSN_k400.pdparams", reference_state(resnet))
    return resnet, path


SMALL = ["-o", "data.short_side=64", "-o", "data.crop_size=56", "-o", "data.num_workers=0"]


@pytest.mark.slow
def test_tsnctl_test_gives_the_reference_logits(tmp_path, reference_checkpoint):
    resnet, checkpoint = reference_checkpoint
    clips = {"walk/a.mp4": (11, 96, 72), "run/b.mp4": (9, 64, 80)}  # frames, width, height
    for i, (name, (n, w, h)) in enumerate(clips.items()):
        write_frame_folder(tmp_path / "frames" / name, textured_frames(n, w, h, seed=i))
    (tmp_path / "frames" / "list.txt").write_text("".join(f"{name} {n} {i}\n" for i, (name, (n, _, _)) in
                                                          enumerate(clips.items())))
    result = CliRunner().invoke(app, ["test", "-w", str(checkpoint), *SMALL, "-o", "test.num_seg=3",
                                      "--list", str(tmp_path / "frames" / "list.txt"),
                                      "--save-scores", str(tmp_path / "scores.csv")])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(open(tmp_path / "scores.csv")))[1:]
    assert [row[0] for row in rows] == list(clips)
    for row, (name, (n, _, _)) in zip(rows, clips.items(), strict=True):
        expected = source_scores(resnet, ref_inputs(tmp_path / "frames" / name, n, 3, 64, 56, "ten"))
        got = np.array(row[2:], dtype=np.float64)
        assert got.shape == (400,)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


@pytest.mark.slow
def test_predict_paddlevideo_preset_and_converted_checkpoint(tmp_path, reference_checkpoint):
    resnet, checkpoint = reference_checkpoint
    folder = write_frame_folder(tmp_path / "clip", textured_frames(20, 100, 60, seed=9))
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(folder), "-w", str(checkpoint), *SMALL, "--preset", "paddlevideo",
                                 "--num-seg", "5", "--json"])
    assert result.exit_code == 0, result.output
    (top,) = json.loads(result.stdout)[0]["topk"]  # the reference prints the top-1 only
    imgs = [Image.open(folder / f"img_{i + 1:05d}.jpg").convert("RGB") for i in ref_indices(20, 5)]
    logits = source_scores(resnet, ref_normalize(ref_ten_crop([ref_stretch(img, 64) for img in imgs], 56)))
    probs = torch.softmax(torch.from_numpy(logits).double(), 0)
    assert 0.01 < float(probs.max()) < 0.99  # a softmax that would show a change of inputs
    assert top["index"] == int(probs.argmax())
    assert top["label"] == read_labels(KINETICS400_LABELS)[top["index"]]
    assert top["prob"] == pytest.approx(float(probs.max()), rel=1e-4)

    converted = tmp_path / "converted.pt"
    result = runner.invoke(app, ["convert-weights", str(checkpoint), "-o", str(converted),
                                 "--override", "data.short_side=64", "--override", "data.crop_size=56"])
    assert result.exit_code == 0, result.output
    assert "reference .pdparams (400 classes, names from Kinetics-400)" in result.output
    again = runner.invoke(app, ["predict", str(folder), "-w", str(converted), "--preset", "paddlevideo",
                                "--num-seg", "5", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)[0]["topk"][0] == top
