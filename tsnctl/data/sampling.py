"""Segment sampling: which frames of a clip of ``num_frames`` frames are read (0-based indices).

The clip is cut into ``num_seg`` equal segments and one frame is taken from each, as in TSN.
Sampling is deterministic given (seed, epoch, index), so runs and resumed runs see the same frames.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def train_indices(num_frames: int, num_seg: int, rng: np.random.Generator) -> list[int]:
    """Random offset inside each segment: segment i takes ``i*avg + randint(0, avg)``, ``avg = L // K``.

    As in the reference, the tail ``L - K*avg`` frames are never used.
    """
    if num_frames <= num_seg:
        return short_clip_indices(num_frames, num_seg)
    avg = num_frames // num_seg
    offsets = rng.integers(0, avg, size=num_seg)
    return [i * avg + int(offsets[i]) for i in range(num_seg)]


def eval_indices(num_frames: int, num_seg: int) -> list[int]:
    """The centre of each segment: segment i takes ``int(a/2 + a*i)`` with ``a = L / K`` (float)."""
    if num_frames <= num_seg:
        return short_clip_indices(num_frames, num_seg)
    step = num_frames / num_seg
    return [int(step / 2 + step * i) for i in range(num_seg)]


def short_clip_indices(num_frames: int, num_seg: int) -> list[int]:
    """Clips with no more frames than segments repeat frames so that every clip yields ``num_seg``.

    The reference instead swaps in a random other clip (even at test time); we never do that.
    """
    return [int(i * num_frames / num_seg) for i in range(num_seg)]


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream for one clip in one epoch, independent of worker count and order."""
    return np.random.default_rng([seed, epoch, index])


def frame_indices(mode: str, num_seg: int, rng: np.random.Generator | None = None) -> Callable[[int], list[int]]:
    """A clip's frame-index function: random segments in ``train`` mode (drawn from ``rng``), centred otherwise."""
    if mode == "train":
        assert rng is not None, "train mode draws its segments from an rng"
        return lambda num_frames: train_indices(num_frames, num_seg, rng)
    return lambda num_frames: eval_indices(num_frames, num_seg)
