"""Clip transforms as small pure functions over ``[T, H, W, C]`` uint8 RGB arrays.

Each follows the reference pipeline exactly (rounding included), so that our test inputs equal the
reference's to the last pixel. Random choices are drawn once per clip (from the ``rng`` passed in) and
applied to every frame. ``presets.py`` composes these per mode.
"""

from __future__ import annotations

import functools
import math
import threading

import cv2
import numpy as np
import torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)

Box = tuple[int, int, int, int]  # x, y, width, height


def scaled_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output (height, width) of ``scale``: short side to ``short_side``, long side ``int(long*s + 0.5)``."""
    if min(height, width) == short_side:
        return height, width
    if width <= height:
        factor = short_side / width
    else:
        factor = short_side / height
    return int(height * factor + 0.5), int(width * factor + 0.5)


def scale(frames: np.ndarray, short_side: int) -> np.ndarray:
    """Resize keeping the aspect ratio (bilinear); frames whose short side already fits are left as is."""
    height, width = frames.shape[1:3]
    out_h, out_w = scaled_size(height, width, short_side)
    if (out_h, out_w) == (height, width):
        return frames
    return resize(frames, out_h, out_w)


def scale_into(frames: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``scale`` written into ``out`` (``[T, h, w, 3]`` of ``scaled_size``; any row stride, e.g. the corner
    of a larger batch slot), without an intermediate array."""
    if out.shape[1:3] == frames.shape[1:3]:
        out[...] = frames
        return out
    return resize(frames, *out.shape[1:3], out)


def stretched_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output (height, width) of ``stretch``: short side to ``short_side``, long side to ``int(short*4/3)``."""
    if min(height, width) == short_side:
        return height, width
    long_side = int(short_side * 4.0 / 3.0)
    return (long_side, short_side) if width <= height else (short_side, long_side)


def stretch(frames: np.ndarray, short_side: int) -> np.ndarray:
    """The reference predict tool's resize: a fixed 4:3 frame (341x256), aspect ratio not kept."""
    height, width = frames.shape[1:3]
    out_h, out_w = stretched_size(height, width, short_side)
    if (out_h, out_w) == (height, width):
        return frames
    return resize(frames, out_h, out_w)


def resize(frames: np.ndarray, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear resize of every frame (``cv2.INTER_LINEAR`` on the RGB array, as the reference), into
    ``out`` when given."""
    if out is None:
        out = np.empty((frames.shape[0], height, width, frames.shape[3]), dtype=frames.dtype)
    for frame, target in zip(frames, out, strict=True):
        cv2.resize(frame, (width, height), dst=target, interpolation=cv2.INTER_LINEAR)
    return out


def crop(frames: np.ndarray, box: Box) -> np.ndarray:
    x, y, w, h = box
    return frames[:, y : y + h, x : x + w]


def hflip(frames: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Mirror every frame left-right, into ``out`` when given (``out`` may be ``frames``: cv2 swaps in
    place). ``cv2.flip`` is ~20x faster than copying a negatively strided numpy view."""
    out = np.empty(frames.shape, frames.dtype) if out is None else out
    for frame, target in zip(frames, out, strict=True):
        cv2.flip(frame, 1, dst=target)
    return out


def multi_scale_crop_box(height: int, width: int, crop_size: int, rng: np.random.Generator,
                         scales: tuple[float, ...] = MULTI_SCALES) -> Box:
    """Draw the MultiScaleCrop box: a (w, h) pair from the scales, at one of the fixed positions.

    Crop sides are ``int(base*s)`` for s in ``scales`` (the reference's 1, .875, .75, .66) with base the
    short side; a side within
    3 px of ``crop_size`` snaps to it. Pairs whose scale indices differ by at most 1 are equally likely.
    Positions use float steps ``(W-cw)/4`` and the box corners are rounded half-to-even. The reference
    config sets ``allow_duplication: True``: all five positions stay in the draw even when a step is 0 and
    some coincide (so, for a full-width crop, x=0 is drawn with probability 2/5, not 1/3).
    """
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    sides = [crop_size if abs(s - crop_size) < 3 else s for s in sides]
    pairs = [(sides[j], sides[i]) for i in range(len(sides)) for j in range(len(sides)) if abs(i - j) <= 1]
    crop_w, crop_h = pairs[rng.integers(len(pairs))]
    w_step, h_step = (width - crop_w) / 4, (height - crop_h) / 4
    positions = [(0.0, 0.0), (4 * w_step, 0.0), (0.0, 4 * h_step), (4 * w_step, 4 * h_step), (2 * w_step, 2 * h_step)]
    x, y = positions[rng.integers(len(positions))]
    # The reference crops with PIL, which rounds each corner with Python's round (half-to-even).
    x0, y0, x1, y1 = round(x), round(y), round(x + crop_w), round(y + crop_h)
    return x0, y0, x1 - x0, y1 - y0


def multi_scale_crop(frames: np.ndarray, crop_size: int, rng: np.random.Generator,
                     out: np.ndarray | None = None, scales: tuple[float, ...] = MULTI_SCALES) -> np.ndarray:
    """MultiScaleCrop (train): a random box from ``multi_scale_crop_box``, resized to crop_size^2 (into
    ``out`` when given)."""
    height, width = frames.shape[1:3]
    box = multi_scale_crop_box(height, width, crop_size, rng, scales)
    return resize(crop(frames, box), crop_size, crop_size, out)


def random_hflip(frames: np.ndarray, rng: np.random.Generator, p: float = 0.5, in_place: bool = False) -> np.ndarray:
    """Mirror the whole clip with probability ``p`` (one draw per clip), in place when asked."""
    if rng.random() < p:
        return hflip(frames, frames if in_place else None)
    return frames


def center_crop_box(height: int, width: int, crop_size: int) -> Box:
    return (width - crop_size) // 2, (height - crop_size) // 2, crop_size, crop_size


def center_crop(frames: np.ndarray, crop_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """CenterCrop (valid): ``x = (W-c)//2``, ``y = (H-c)//2``. ``[T,H,W,C] -> [T,c,c,C]`` (a view of
    ``frames``, or copied into ``out`` when given)."""
    views = crop(frames, center_crop_box(*frames.shape[1:3], crop_size))
    if out is None:
        return views
    out[...] = views
    return out


def ten_crop_boxes(height: int, width: int, crop_size: int) -> list[Box]:
    """The five TenCrop positions in reference order: top-left, top-right, bottom-left, bottom-right, centre.

    Steps are integers: ``ws = (W-c)//4``, ``hs = (H-c)//4``.
    """
    ws, hs = (width - crop_size) // 4, (height - crop_size) // 4
    corners = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    return [(x, y, crop_size, crop_size) for x, y in corners]


def ten_crop(frames: np.ndarray, crop_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """TenCrop (test). ``[T,H,W,C] -> [10*T,c,c,C]`` ordered ``[p0 x T, p0 flipped x T, p1 x T, ...]``.

    Each view is written once into one output array (``out`` when given): the 25x10 test clip is 37 MB of
    uint8.
    """
    t = frames.shape[0]
    if out is None:
        out = np.empty((10 * t, crop_size, crop_size, frames.shape[3]), frames.dtype)
    for k, box in enumerate(ten_crop_boxes(*frames.shape[1:3], crop_size)):
        patch = crop(frames, box)
        out[2 * k * t : (2 * k + 1) * t] = patch
        hflip(patch, out[(2 * k + 1) * t : (2 * k + 2) * t])
    return out


def three_crop_boxes(height: int, width: int, crop_size: int) -> list[Box]:
    """Three squares along the long side (start, centre, end), centred on the short side."""
    if width >= height:
        y = (height - crop_size) // 2
        return [(x, y, crop_size, crop_size) for x in (0, (width - crop_size) // 2, width - crop_size)]
    x = (width - crop_size) // 2
    return [(x, y, crop_size, crop_size) for y in (0, (height - crop_size) // 2, height - crop_size)]


def three_crop(frames: np.ndarray, crop_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """ThreeCrop (test). ``[T,H,W,C] -> [3*T,c,c,C]`` ordered ``[start x T, centre x T, end x T]`` (into
    ``out`` when given)."""
    views = [crop(frames, box) for box in three_crop_boxes(*frames.shape[1:3], crop_size)]
    return np.concatenate(views, out=out)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``[T,H,W,C]`` uint8 -> ``[T,C,H,W]`` uint8 tensor (no copy of the pixel values into float yet)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def normalize(clips: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float32: ``x/255``, minus the ImageNet mean, over its std (RGB order).

    Bit-identical to the reference's float32 formula, whatever the path. On a CPU, batches from the
    loader (each frame ``[H, W, C]`` in memory, as ``to_tensor`` leaves it) go through one table lookup per
    value (``normalize_into``); other layouts and devices run the formula in place on one float buffer.
    """
    hwc = clips.movedim(-3, -1)
    if clips.device.type == "cpu" and hwc.is_contiguous() and hwc.numel():
        out = float_buffer(hwc.shape)
        normalize_into(hwc.numpy().reshape(-1, hwc.shape[-2], 3), out.numpy().reshape(-1, hwc.shape[-2], 3))
        return out.movedim(-1, -3)
    mean = torch.tensor(MEAN, device=clips.device).view(3, 1, 1)
    std = torch.tensor(STD, device=clips.device).view(3, 1, 1)
    return clips.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)


def normalize_into(pixels: np.ndarray, out: np.ndarray) -> None:
    """Write the normalized float32 values of uint8 ``[H, W, 3]`` pixels into ``out`` (float32, same shape)
    in one pass: a uint8 has 256 values, so each channel's results are a table computed once with the
    reference formula, and ``cv2.LUT`` looks them up (about 0.5 ns a value on one core, against 2-4 ns for
    the three float passes; any row stride is fine, so crops of a frame need no copy)."""
    cv2.LUT(pixels, _normalize_table(), dst=out)


def float_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialized float32 CPU tensor for model input, in the memory of the previous one once nothing
    refers to that any more (the model and autograd are done with it). Fresh pages cost more than the
    normalization that fills them: a 25x10 clip's 150 MB took 65 ms of page faults against 18 ms of
    lookups. The one spare stays allocated for the process's life."""
    size = math.prod(shape)
    with _SPARE_LOCK:
        if _SPARE and _SPARE[0][0].numel() >= size and _uses(_SPARE[0][0]) == _SPARE[0][1]:
            return _SPARE[0][0][:size].view(shape)
        with torch.inference_mode(False):  # a buffer made under inference mode could not feed training later
            buffer = torch.empty(size, dtype=torch.float32)
        _SPARE[:] = [(buffer, _uses(buffer))] if _uses(buffer) else []
        return buffer.view(shape)


def _uses(tensor: torch.Tensor) -> int:
    """How many tensors share ``tensor``'s memory (0 when this torch cannot tell: then nothing is reused)."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    return use_count(tensor.untyped_storage()._cdata) if use_count else 0


_SPARE: list[tuple[torch.Tensor, int]] = []  # the last float buffer, and its use count when alone
_SPARE_LOCK = threading.Lock()


@functools.cache
def _normalize_table() -> np.ndarray:
    """``[1, 256, 3]`` float32: value v of channel c -> ``(v/255 - MEAN[c]) / STD[c]``, computed with the
    same float32 operations in the same order as ``normalize``'s formula, hence the same bits."""
    values = torch.arange(256, dtype=torch.float32)[:, None].repeat(1, 3)
    table = values.div_(255.0).sub_(torch.tensor(MEAN)).div_(torch.tensor(STD))
    return np.ascontiguousarray(table.numpy()[None])
