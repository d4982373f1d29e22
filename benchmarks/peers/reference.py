"""The baseline: a faithful re-implementation of the reference's per-image data path.

PaddleVideo's TSN pipeline (and MMAction2's for videos) handles each frame as its own PIL image: PIL
open + convert, Scale with cv2 per image (only when the short side is not already the target), PIL crop
(and PIL bilinear resize for MultiScaleCrop), PIL flips, then a float32 stack of every view and the
normalization in numpy on the worker. Videos are decoded with decord ``VideoReader.get_batch``. Randomness
uses Python's ``random`` as the reference does. Kept here, not in the library, only for ``tsnctl bench``.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from tsnctl.data.transforms import MEAN, MULTI_SCALES, STD


def frames_clip(folder: Path, indices: list[int], mode: str, crop: str, short_side: int, crop_size: int,
                template: str = "img_{:05d}.jpg") -> np.ndarray:
    """float32 ``[T', 3, c, c]`` of a frame folder, the reference's way."""
    images = [Image.open(folder / template.format(i + 1)).convert("RGB") for i in indices]
    return _pipeline(images, mode, crop, short_side, crop_size)


def video_clip(path: Path, index_fn, mode: str, crop: str, short_side: int, crop_size: int) -> np.ndarray:
    """float32 ``[T', 3, c, c]`` of a video: decord ``get_batch`` (MMAction2's DecordDecode), then the same
    per-image pipeline."""
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    indices = index_fn(len(reader))
    frames = reader.get_batch(indices).asnumpy()
    return _pipeline([Image.fromarray(f) for f in frames], mode, crop, short_side, crop_size)


def _pipeline(images: list[Image.Image], mode: str, crop: str, short_side: int, crop_size: int) -> np.ndarray:
    images = [_scale(img, short_side) for img in images]
    if mode == "train":
        images = _multi_scale_crop(images, crop_size)
        if random.random() < 0.5:
            images = [img.transpose(Image.FLIP_LEFT_RIGHT) for img in images]
    elif crop == "ten":
        images = _ten_crop(images, crop_size)
    else:
        w, h = images[0].size
        x, y = (w - crop_size) // 2, (h - crop_size) // 2
        images = [img.crop((x, y, x + crop_size, y + crop_size)) for img in images]
    # Image2Array and Normalization of the reference: a float32 copy of every view, normalized in numpy.
    array = np.stack([np.asarray(img) for img in images]).astype("float32").transpose(0, 3, 1, 2)
    array = array / 255.0
    array -= np.array(MEAN, dtype=np.float32).reshape(3, 1, 1)
    array /= np.array(STD, dtype=np.float32).reshape(3, 1, 1)
    return array


def _scale(img: Image.Image, short_side: int) -> Image.Image:
    w, h = img.size
    if min(w, h) == short_side:
        return img
    if w <= h:
        ow, oh = short_side, int(h * short_side / w + 0.5)
    else:
        ow, oh = int(w * short_side / h + 0.5), short_side
    return Image.fromarray(cv2.resize(np.asarray(img), (ow, oh), interpolation=cv2.INTER_LINEAR))


def _multi_scale_crop(images: list[Image.Image], crop_size: int) -> list[Image.Image]:
    w, h = images[0].size
    sides = [int(min(w, h) * s) for s in MULTI_SCALES]
    sides = [crop_size if abs(s - crop_size) < 3 else s for s in sides]
    pairs = [(sides[j], sides[i]) for i in range(4) for j in range(4) if abs(i - j) <= 1]
    cw, ch = random.choice(pairs)
    ws, hs = (w - cw) / 4, (h - ch) / 4
    x, y = random.choice([(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)])
    return [img.crop((x, y, x + cw, y + ch)).resize((crop_size, crop_size), Image.BILINEAR) for img in images]


def _ten_crop(images: list[Image.Image], crop_size: int) -> list[Image.Image]:
    w, h = images[0].size
    ws, hs = (w - crop_size) // 4, (h - crop_size) // 4
    views = []
    for x, y in [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]:
        crops = [img.crop((x, y, x + crop_size, y + crop_size)) for img in images]
        views += crops + [c.transpose(Image.FLIP_LEFT_RIGHT) for c in crops]
    return views
