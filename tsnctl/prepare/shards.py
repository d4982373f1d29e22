"""Split extraction across machines: deterministic shards of a video set, and merging their frame lists.

A video's shard depends only on its own relative path (a hash), not on the list order or on the other
videos, so re-runs, resumed runs and runs with a grown list put every video in the same shard.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tsnctl.errors import UserError
from tsnctl.textfiles import read_utf8


def parse_shard(spec: str) -> tuple[int, int]:
    """``"I/N"`` (0 <= I < N) -> (I, N)."""
    index, sep, count = spec.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = (-1, 0)
    if not sep or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise UserError(f"--shard {spec!r}: expected I/N with 0 <= I < N, e.g. 0/8")
    return shard


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) that the video named ``name`` belongs to."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    return shard is None or shard_of(name, shard[1]) == shard[0]


def merge_frame_lists(order: list[str], shard_lists: list[str | Path], allow_missing: bool = False) -> list[str]:
    """Join shard frame lists into the lines a single-machine run writes, in the order of ``order`` (the
    videos' frame folders, as the lists name them).

    Every name must appear in at most one shard list; names of ``order`` missing from all of them are an
    error (a shard failed or is still running) unless ``allow_missing``.
    """
    lines: dict[str, str] = {}
    for shard_list in shard_lists:
        path = Path(shard_list)
        for line_no, line in enumerate(read_utf8(path, "shard list").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) < 3:
                raise UserError(f"{path}:{line_no}: expected '<frame_dir> <num_frames> <label>'")
            name = " ".join(fields[:-2])
            if name in lines:
                raise UserError(f"{path}:{line_no}: {name} is already in another shard list")
            lines[name] = line.rstrip("\n") + "\n"
    unknown = sorted(set(lines) - set(order))
    if unknown:
        raise UserError(f"{len(unknown)} listed video(s) are not in the source, e.g. {unknown[0]}")
    missing = [name for name in order if name not in lines]
    if missing and not allow_missing:
        raise UserError(f"{len(missing)} of {len(order)} videos are in no shard list, e.g. {missing[0]} "
                        "(a shard failed or has not finished; --allow-missing merges what is there)")
    return [lines[name] for name in order if name in lines]
