"""Frame-exact video decoding with PyAV: demux once, decode forward, skip frames nobody asked for.

Frame ``i`` is the i-th frame in presentation order: the numbering of OpenCV's sequential reads, and so of
``extract-frames`` (frame i of a video == ``img_{i+1:05d}.jpg`` of its frame folder).

Why PyAV and not decord, OpenCV or TorchCodec: sampled TSN frames are spread over the whole clip and
Kinetics-style H.264 has one keyframe every ~250 frames, so every decoder must run the codec from the
first frame to the last sampled one. What differs is the work around that. Demuxing first gives the frame
count without decoding (container headers overstate it for many AVI/MP4 files) and each packet's
presentation rank; a packet whose frame is not wanted is decoded with ``skip_frame=NONREF``, so the codec
drops it when no other frame refers to it (about half the frames of x264's default B-pyramid). Measured on
a 10 s 340x256 H.264 clip, 8 random segments, one core: decord ``get_batch`` ~70 ms, OpenCV grab/read
~60 ms, PyAV decoding every frame ~75 ms, PyAV with skipping ~48-58 ms (see docs/benchmarks.md).
TorchCodec needs FFmpeg's shared libraries from the system, which PyAV's wheels bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np

from tsnctl.errors import UserError

IndexFn = Callable[[int], list[int]]  # num_frames -> the 0-based indices to read


def read_video(path: Path, index_fn: IndexFn) -> np.ndarray:
    """RGB uint8 frames ``[T, H, W, 3]`` at the indices ``index_fn(num_frames)`` asks for.

    ``num_frames`` is the number of video packets (each holds one frame), counted without decoding.
    """
    with _demuxed(path) as (stream, packets):
        indices = index_fn(len(packets))
        found = _decode(stream, packets, indices)
    missing = sorted(set(indices) - found.keys())
    if missing:
        raise UserError(f"{path}: frame {missing[0]} of {len(packets)} could not be decoded (truncated or "
                        "corrupt video)")
    frames = [found[i] for i in indices]
    if len({f.shape for f in frames}) != 1:
        raise UserError(f"{path}: frames differ in size")
    return np.stack(frames)


def count_frames(path: Path) -> int:
    """Frames of a video (its video packets), without decoding."""
    with _demuxed(path) as (_, packets):
        return len(packets)


@contextmanager
def _demuxed(path: Path) -> Iterator[tuple[av.video.stream.VideoStream, list[av.Packet]]]:
    """The first video stream and its frame packets in decode order; FFmpeg errors become UserErrors."""
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
            packets = [p for p in container.demux(stream) if p.size and not p.is_discard]
            if not packets:
                raise UserError(f"{path}: no decodable video frames")
            yield stream, packets
    except av.FFmpegError as exc:
        # strerror is FFmpeg's reason without the path it appends (the message names the file already)
        raise UserError(f"{path}: not a readable video ({exc.strerror or exc})") from None


def _decode(stream: av.video.stream.VideoStream, packets: list[av.Packet], indices: list[int]
            ) -> dict[int, np.ndarray]:
    """Decode ``packets`` in order up to the last wanted frame; frames are placed by presentation rank."""
    wanted = set(indices)
    pts = [p.pts for p in packets]
    if None in pts or len(set(pts)) != len(pts):
        return _decode_sequential(stream, packets, wanted)
    rank = {p: i for i, p in enumerate(sorted(pts))}
    codec = stream.codec_context
    found: dict[int, np.ndarray] = {}

    def take(frames: list[av.VideoFrame]) -> None:
        for frame in frames:
            index = rank.get(frame.pts)
            if index in wanted and index not in found:
                found[index] = _rgb(frame)

    for packet in packets:
        # A wanted frame, or one the codec may need as a reference, is decoded; the rest can be dropped.
        codec.skip_frame = "DEFAULT" if rank[packet.pts] in wanted else "NONREF"
        take(codec.decode(packet))
        if len(found) == len(wanted):
            return found
    codec.skip_frame = "DEFAULT"
    take(codec.decode(None))  # frames still held back for reordering
    return found


def _decode_sequential(stream: av.video.stream.VideoStream, packets: list[av.Packet], wanted: set[int]
                       ) -> dict[int, np.ndarray]:
    """Streams without usable timestamps: number frames in the order the decoder returns them."""
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
