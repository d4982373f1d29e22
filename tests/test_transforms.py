import numpy as np
import pytest
import torch

from tsnctl.data import transforms as T
from tsnctl.data.presets import eval_preset, train_preset


def frames_of(height: int, width: int, t: int = 2) -> np.ndarray:
    """Frames whose pixel (y, x) encodes its position, so crops can be located exactly."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([ys % 256, xs % 256, (xs // 256) * 64 + (ys // 256)], axis=-1).astype(np.uint8)
    return np.stack([image] * t)


@pytest.mark.parametrize(("width", "height", "expected"), [
    (340, 256, (256, 340)),  # short side already 256: untouched
    (320, 240, (256, 341)),  # int(320 * 256 / 240 + 0.5) = int(341.83) = 341
    (256, 455, (455, 256)),  # portrait, short side already 256
    (257, 301, (300, 256)),  # int(301 * 256 / 257 + 0.5) = int(300.33) = 300
])
def test_scale_sizes(width, height, expected):
    assert T.scaled_size(height, width, 256) == expected
    assert T.scale(np.zeros((1, height, width, 3), np.uint8), 256).shape[1:3] == expected


def test_scale_leaves_fitting_frames_untouched():
    frames = frames_of(256, 340)
    assert T.scale(frames, 256) is frames


def test_stretch_of_the_predict_preset():
    assert T.stretched_size(240, 320, 256) == (256, 341)
    assert T.stretched_size(480, 360, 256) == (341, 256)
    assert T.stretched_size(256, 455, 256) == (256, 455)  # short side already 256: untouched
    assert T.stretched_size(240, 400, 256) == (256, 341)  # 5:3 in, 4:3 out: the aspect ratio is not kept
    assert T.stretch(np.zeros((1, 240, 320, 3), np.uint8), 256).shape == (1, 256, 341, 3)


def test_ten_crop_boxes_for_455x256():
    boxes = T.ten_crop_boxes(256, 455, 224)  # ws = (455-224)//4 = 57, hs = (256-224)//4 = 8
    assert boxes == [(0, 0, 224, 224), (228, 0, 224, 224), (0, 32, 224, 224), (228, 32, 224, 224),
                     (114, 16, 224, 224)]
    assert {b[0] for b in boxes} == {0, 228, 114}


def test_ten_crop_order_positions_then_flips():
    frames = frames_of(256, 340, t=3)
    views = T.ten_crop(frames, 224)
    assert views.shape == (30, 224, 224, 3)
    boxes = T.ten_crop_boxes(256, 340, 224)
    for p, (x, y, w, h) in enumerate(boxes):
        plain = views[p * 6 : p * 6 + 3]
        flipped = views[p * 6 + 3 : p * 6 + 6]
        np.testing.assert_array_equal(plain, frames[:, y : y + h, x : x + w])
        np.testing.assert_array_equal(flipped, frames[:, y : y + h, x : x + w][:, :, ::-1])


def test_center_and_three_crop():
    frames = frames_of(256, 341)
    center = T.center_crop(frames, 224)
    np.testing.assert_array_equal(center, frames[:, 16:240, 58:282])
    assert T.three_crop_boxes(256, 341, 224) == [(0, 16, 224, 224), (58, 16, 224, 224), (117, 16, 224, 224)]
    assert T.three_crop_boxes(300, 256, 224) == [(16, 0, 224, 224), (16, 38, 224, 224), (16, 76, 224, 224)]
    assert T.three_crop(frames, 224).shape == (6, 224, 224, 3)


def test_multi_scale_crop_boxes_follow_the_reference_grid():
    rng = np.random.default_rng(0)
    # 340x256: crop sides int(256*s) = 256, 224, 192, 168; a side within 3 px of 224 snaps to it.
    sides = {256, 224, 192, 168}
    seen_sizes, seen_positions = set(), set()
    for _ in range(2000):
        x, y, w, h = T.multi_scale_crop_box(256, 340, 224, rng)
        assert w in sides and h in sides
        order = [256, 224, 192, 168]
        assert abs(order.index(w) - order.index(h)) <= 1
        ws, hs = (340 - w) / 4, (256 - h) / 4
        candidates = {(round(a * ws), round(b * hs)) for a, b in [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]}
        assert (x, y) in candidates
        seen_sizes.add((w, h))
        seen_positions.add((x, y, w, h))
    assert len(seen_sizes) == 10


def test_crop_scales_choose_the_multi_scale_crop_sides():
    rng = np.random.default_rng(0)
    boxes = {T.multi_scale_crop_box(64, 85, 56, rng, scales=(1.0, 0.875))[2:] for _ in range(500)}
    assert boxes == {(64, 64), (56, 64), (64, 56), (56, 56)}  # int(64 * .875) = 56; never 48 or 42
    frames = np.zeros((2, 64, 85, 3), np.uint8)
    assert T.multi_scale_crop(frames, 56, rng, scales=(1.0,)).shape == (2, 56, 56, 3)


def test_train_clips_take_the_configured_crop_scales():
    from tsnctl.config import load_config
    from tsnctl.data.splits import clip_settings

    assert clip_settings(load_config(None), "train").crop_scales == T.MULTI_SCALES  # the reference's by default
    cfg = load_config(None, ["data.crop_scales=[1.0, 0.875]"])
    assert clip_settings(cfg, "train").crop_scales == (1.0, 0.875)


def test_multi_scale_crop_rounds_half_to_even():
    # Width 257: the centre x of each crop width lands on .5 (steps (257-w)/4 are 0.25, 8.25, 16.25, 22.25)
    # and PIL-style rounding takes the even neighbour: 0.5 -> 0, 16.5 -> 16, 32.5 -> 32, 44.5 -> 44.
    rng = np.random.default_rng(0)
    boxes = {T.multi_scale_crop_box(256, 257, 224, rng)[::2] for _ in range(3000)}  # (x, w)
    centres = {w: x for x, w in boxes if x not in (0, 257 - w)}
    assert centres == {224: 16, 192: 32, 168: 44}


def test_normalize_matches_the_reference_arithmetic():
    pixels = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = T.normalize(pixels)
    expected = (np.array([0, 128, 255], np.float32) / 255.0 - np.array(T.MEAN, np.float32)) / np.array(
        T.STD, np.float32)
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), expected, rtol=1e-6)
    assert out.dtype == torch.float32


def test_presets_shapes_and_one_draw_per_clip():
    frames = frames_of(240, 320, t=4)
    clip = train_preset(frames, 128, 112, np.random.default_rng(0))
    assert clip.shape == (4, 3, 112, 112)
    # the same crop and flip for every frame: identical input frames give identical views
    assert all(torch.equal(clip[0], clip[i]) for i in range(4))
    assert eval_preset(frames, 256, 224, "ten").shape == (40, 3, 224, 224)
    assert eval_preset(frames, 256, 224, "three").shape == (12, 3, 224, 224)
    assert eval_preset(frames, 256, 224, "center").shape == (4, 3, 224, 224)


def test_multi_scale_crop_keeps_duplicate_positions_in_the_draw():
    # tsn_k400_frames.yaml sets allow_duplication: True. On a 256x256 frame the 256x256 crop has both steps
    # 0, so all five positions are (0, 0); the 224x256 crop (w, h) has x in {0, 32, 0, 32, 16}: 0 twice in 5.
    rng = np.random.default_rng(0)
    boxes = [T.multi_scale_crop_box(256, 256, 224, rng) for _ in range(20000)]
    xs = [x for x, _, w, h in boxes if (w, h) == (224, 256)]
    share = {x: xs.count(x) / len(xs) for x in set(xs)}
    assert set(share) == {0, 16, 32}
    assert share[0] == pytest.approx(0.4, abs=0.05) and share[16] == pytest.approx(0.2, abs=0.05)
