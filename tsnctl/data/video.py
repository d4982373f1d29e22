"""Frame-exact video decoding with PyAV: demux once, decode forward, skip frames nobody asked for.

Frame ``i`` is the i-th frame the decoder outputs when it is fed every packet: presentation order, the
numbering of OpenCV's sequential reads and so of ``extract-frames`` (frame i of a video ==
``img_{i+1:05d}.jpg`` of its frame folder). Packets an edit list trims (demuxed with the discard flag) are
decoded, as later frames may refer to them, but their frames are dropped by libavcodec and not counted.

Why PyAV and not decord, OpenCV or TorchCodec: sampled TSN frames are spread over the whole clip and
Kinetics-style H.264 has one keyframe every ~250 frames, so every decoder must run the codec from the
first frame to the last sampled one. What differs is the work around that. Demuxing first gives the frame
count without decoding (container headers overstate it for many AVI/MP4 files). Where the container stores
each packet's presentation time (MP4/MOV, Matroska/WebM), that gives its presentation rank, and a packet
whose frame is not wanted is decoded with ``skip_frame=NONREF``, so the codec drops it when no other frame
refers to it (about half the frames of x264's default B-pyramid). Measured on a 10 s 340x256 H.264 clip,
8 random segments, one core: decord ``get_batch`` ~70 ms, OpenCV grab/read ~60 ms, PyAV decoding every
frame ~75 ms, PyAV with skipping ~48-58 ms (see docs/benchmarks.md). Other containers (AVI above all) only
have timestamps FFmpeg guesses from decode order, wrong for B-frames and for DivX/XviD "packed" B-frames
(a reference and a B-frame in one packet, an empty N-VOP packet where the B-frame was): there every frame
is decoded and numbered in the order the decoder outputs it, as OpenCV does. That costs the skipping:
+30% on an MPEG-4 AVI with B-frames (none without B-frames: there every frame is a reference anyway).
TorchCodec needs FFmpeg's shared libraries from the system, which PyAV's wheels bundle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np

from tsnctl.data import mpeg4
from tsnctl.errors import UserError

IndexFn = Callable[[int], list[int]]  # num_frames -> the 0-based indices to read

# Containers that store every packet's presentation time (FFmpeg's demuxer names). Elsewhere (AVI, raw
# streams, ...) FFmpeg derives timestamps from decode order, so they cannot rank frames.
_STORED_PTS = {"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}


def read_video(path: Path, index_fn: IndexFn, window: tuple[float, float] | None = None) -> np.ndarray:
    """RGB uint8 frames ``[T, H, W, 3]`` at the indices ``index_fn(num_frames)`` asks for.

    ``num_frames`` is the number of frames a full decode yields (its shown video packets), counted without
    decoding. With ``window = (start_s, end_s)`` only the frames of that time range count (``frame_range``),
    and ``index_fn`` numbers them from 0.
    """
    with _demuxed(path) as (stream, packets, shown, stored_pts):
        num_frames = sum(shown)
        first, last = frame_range(path, num_frames, _fps(stream), window) if window else (0, num_frames)
        indices = [first + i for i in index_fn(last - first)]
        found = _decode(stream, packets, shown, set(indices), stored_pts)
    missing = sorted(set(indices) - found.keys())
    if missing:
        raise UserError(f"{path}: frame {missing[0]} of {num_frames} could not be decoded (truncated or "
                        "corrupt video)")
    frames = [found[i] for i in indices]
    if len({f.shape for f in frames}) != 1:
        raise UserError(f"{path}: frames differ in size")
    return np.stack(frames)


def frame_range(path: Path | str, num_frames: int, fps: float, window: tuple[float, float]) -> tuple[int, int]:
    """Frames ``[first, last)`` of a time range: frame i is shown from i / fps, so those with
    ``start_s <= i / fps < end_s`` (the range clipped to the video); a range holding no frame is an error."""
    start, end = window
    first = max(math.ceil(start * fps - 1e-6), 0)
    last = min(math.ceil(end * fps - 1e-6), num_frames)
    if last <= first:
        raise UserError(f"{path}: time range {start:g} to {end:g} s holds no frame (the video has {num_frames} "
                        f"frames at {fps:g} fps, {num_frames / fps:.2f} s)")
    return first, last


def window_frames(path: Path, window: tuple[float, float]) -> tuple[int, int]:
    """Frames ``[first, last)`` of the time range ``window`` of a video (``frame_range``), without decoding."""
    with _demuxed(path) as (stream, _, shown, _):
        return frame_range(path, sum(shown), _fps(stream), window)


def _fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise UserError(f"{stream.container.name}: no frame rate in the video, so a time range cannot be cut")
    return float(rate)


def count_frames(path: Path) -> int:
    """Frames a full decode of the video yields (its shown video packets), without decoding."""
    with _demuxed(path) as (_, _, shown, _):
        return sum(shown)


def _shown(stream: av.video.stream.VideoStream, packets: list[av.Packet]) -> list[bool]:
    """Whether each packet yields a shown frame: not when an edit list trims it (discard flag), nor an
    MPEG-4 Part 2 not-coded VOP (``data/mpeg4.py``); every other packet holds one frame."""
    shown = [not p.is_discard for p in packets]
    if stream.codec_context.name == "mpeg4":
        counts = mpeg4.frames_per_packet([bytes(p) for p in packets], stream.codec_context.extradata)
        if counts is not None:
            shown = [keep and count == 1 for keep, count in zip(shown, counts, strict=True)]
    return shown


@contextmanager
def _demuxed(path: Path) -> Iterator[tuple[av.video.stream.VideoStream, list[av.Packet], list[bool], bool]]:
    """The first video stream, its frame packets in decode order, which of them yield a shown frame, and
    whether their timestamps can rank frames; FFmpeg errors become UserErrors."""
    if not path.is_file():
        raise UserError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["no streams"]
                raise UserError(f"{path}: not a readable video (no video stream, only {', '.join(kinds)}: "
                                "an audio-only file or a truncated container)")
            stream = container.streams.video[0]
            stream.thread_count = 1  # loader workers already decode clips in parallel
            packets = [p for p in container.demux(stream) if p.size]
            shown = _shown(stream, packets)
            if not any(shown):
                raise UserError(f"{path}: no decodable video frames")
            # MPEG-4 Part 2 may hold packed B-frames, whose packets' timestamps are not their frames'
            stored_pts = container.format.name in _STORED_PTS and stream.codec_context.name != "mpeg4"
            yield stream, packets, shown, stored_pts
    except av.FFmpegError as exc:
        # strerror is FFmpeg's reason without the path it appends (the message names the file already)
        raise UserError(f"{path}: not a readable video ({exc.strerror or exc})") from None


def _decode(stream: av.video.stream.VideoStream, packets: list[av.Packet], shown: list[bool],
            wanted: set[int], stored_pts: bool) -> dict[int, np.ndarray]:
    """The wanted frames, by presentation rank where the timestamps allow it, else in output order."""
    rank = _ranks([p for p, keep in zip(packets, shown, strict=True) if keep]) if stored_pts else None
    if rank is not None:
        found = _decode_ranked(stream, packets, wanted, rank)
        if found is not None:
            return found
        stream.codec_context.flush_buffers()  # timestamps out of order: start again from the first packet
    return _decode_sequential(stream, packets, wanted)


def _ranks(packets: list[av.Packet]) -> dict[int, int] | None:
    """Presentation rank of each shown packet's timestamp; None if some are missing or repeated."""
    pts = [p.pts for p in packets]
    if None in pts or len(set(pts)) != len(pts):
        return None
    return {p: i for i, p in enumerate(sorted(pts))}


def _decode_ranked(stream: av.video.stream.VideoStream, packets: list[av.Packet], wanted: set[int],
                   rank: dict[int, int]) -> dict[int, np.ndarray] | None:
    """Decode up to the last wanted frame, dropping unwanted frames nothing refers to. None when the
    decoder's output contradicts the timestamps' order (then only a full decode can number frames)."""
    codec = stream.codec_context
    found: dict[int, np.ndarray] = {}
    last = -1
    for packet in [*packets, None]:
        # A wanted frame, or one the codec may need as a reference, is decoded; the rest can be dropped.
        codec.skip_frame = "DEFAULT" if packet is None or rank.get(packet.pts) in wanted else "NONREF"
        for frame in codec.decode(packet):
            index = rank.get(frame.pts)
            if index is None or index <= last:
                codec.skip_frame = "DEFAULT"
                return None
            last = index
            if index in wanted:
                found[index] = _rgb(frame)
        if len(found) == len(wanted):
            break
    codec.skip_frame = "DEFAULT"
    return found


def _decode_sequential(stream: av.video.stream.VideoStream, packets: list[av.Packet], wanted: set[int]
                       ) -> dict[int, np.ndarray]:
    """Number frames in the order the decoder outputs them, decoding every packet up to the last wanted."""
    found: dict[int, np.ndarray] = {}
    index = 0
    for packet in [*packets, None]:
        for frame in stream.codec_context.decode(packet):
            if index in wanted:
                found[index] = _rgb(frame)
            index += 1
        if len(found) == len(wanted):
            break
    return found


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` turned by the stream's display rotation, as OpenCV (and so extract-frames)
    shows it: a phone video recorded upright comes out upright."""
    image = frame.to_ndarray(format="rgb24")
    turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def stream_info(path: Path) -> tuple[float, int]:
    """The first video stream's average frame rate (0.0 when the container gives none) and its frame count
    from the container header (0 when unknown; an estimate for some AVI files: for progress bars only)."""
    with _opened(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        frames = stream.frames
        if not frames and fps and stream.duration and stream.time_base:
            frames = round(float(stream.duration * stream.time_base) * fps)
        return fps, int(frames or 0)


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame in ``read_video``'s numbering (decoder output order), RGB uint8 ``[H, W, 3]``, decoded
    as the caller reads them: memory stays flat however long the video (``predict --timeline``)."""
    with _opened(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # one video at a time: let FFmpeg use the cores
        try:
            for frame in container.decode(stream):
                yield _rgb(frame)
        except av.FFmpegError as exc:
            raise UserError(f"{path}: decoding stopped ({exc.strerror or exc}): truncated or corrupt video",
                            exit_code=1) from None


@contextmanager
def _opened(path: Path) -> Iterator[av.container.InputContainer]:
    """The container, once it is known to hold a video stream; FFmpeg errors become UserErrors."""
    if not path.is_file():
        raise UserError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise UserError(f"{path}: not a readable video ({exc.strerror or exc})") from None
    with container:
        if not container.streams.video:
            raise UserError(f"{path}: not a readable video (no video stream)")
        yield container
