"""Frame-exact video reading on the streams that break timestamp-based frame picking.

Every clip is written here with PyAV, and ``read_video`` must give, for every index and for random index
subsets, exactly the frame a full sequential decode (PyAV's, and OpenCV's, which ``extract-frames`` uses)
gives at that position; ``count_video_frames`` must be that decode's length.
"""

from __future__ import annotations

import random
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tsnctl.data.decode import count_video_frames, read_video

N = 40  # frames written


def _images(n: int, height: int = 48, width: int = 64):
    """Frames that all differ (moving lines over a ramp), so a frame off by one is caught."""
    for i in range(n):
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 0] = (i * 7) % 256
        image[(i * 3) % height, :, 1] = 255
        image[:, (i * 5) % width, 2] = 255
        yield image


def _encode(path: Path, codec: str, options: dict[str, str] | None = None, **context) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options=options or {})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for name, value in context.items():
            setattr(stream.codec_context, name, value)
        for image in _images(N):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _vop_type(data: bytes) -> str | None:
    """I, P, B or S of the first MPEG-4 VOP in ``data``."""
    at = data.find(b"\x00\x00\x01\xb6")
    return "IPBS"[data[at + 4] >> 6] if at >= 0 else None


def _n_vop(b_vop: bytes, increment_bits: int = 5) -> bytes:
    """An N-VOP (not coded) placeholder with the B-VOP's timing, typed P as XviD/DivX write them.
    ``increment_bits`` fits the 25 fps time base the clips are written with."""
    at = b_vop.find(b"\x00\x00\x01\xb6") + 4
    bits = "".join(f"{byte:08b}" for byte in b_vop[at:at + 4])
    end = 2
    while bits[end] == "1":  # modulo_time_base
        end += 1
    end += 1 + 1 + increment_bits + 1  # its closing 0, marker, vop_time_increment, marker
    header = "01" + bits[2:end] + "0"  # vop_coding_type P, ..., vop_coded 0
    header += "0" + "1" * ((7 - len(header)) % 8)  # stuffing to a byte boundary
    return b_vop[:at] + int(header, 2).to_bytes(len(header) // 8, "big")


def _avi_packets(src: Path) -> list[tuple[bytes, bool]]:
    with av.open(str(src)) as container:
        return [(bytes(p), p.is_keyframe) for p in container.demux(container.streams.video[0]) if p.size]


def _write_avi(src: Path, dst: Path, packets: list[tuple[bytes, bool]]) -> Path:
    """``packets`` (data, keyframe) muxed into an AVI with the stream parameters of ``src``."""
    with av.open(str(src)) as container, av.open(str(dst), "w", format="avi") as out:
        stream = out.add_stream_from_template(container.streams.video[0])
        for n, (data, key) in enumerate(packets):
            packet = av.Packet(data)
            packet.pts = packet.dts = n
            packet.time_base, packet.stream, packet.is_keyframe = stream.time_base, stream, key
            out.mux(packet)
    return dst


def _pack_b_frames(packets: list[tuple[bytes, bool]]) -> list[tuple[bytes, bool]]:
    """DivX/XviD "packed bitstream": each reference VOP and the B-VOP after it in one packet, an N-VOP
    packet where the B-VOP was, and the DivX user data that declares the packing ('p')."""
    packed, i = [packets[0]], 1
    while i < len(packets):
        data, key = packets[i]
        if i + 1 < len(packets) and _vop_type(data) in "IP" and _vop_type(packets[i + 1][0]) == "B":
            packed += [(data + packets[i + 1][0], key), (_n_vop(packets[i + 1][0]), False)]
            i += 2
        else:
            packed.append((data, key))
            i += 1
    first, key = packed[0]
    at = first.find(b"\x00\x00\x01\xb6")
    packed[0] = (first[:at] + b"\x00\x00\x01\xb2DivX503b1393p" + first[at:], key)
    assert sum(len(data) < 16 for data, _ in packed) >= N // 4  # the N-VOPs are there
    return packed


def _drop_frames(packets: list[tuple[bytes, bool]]) -> list[tuple[bytes, bool]]:
    """N-VOPs for dropped frames (XviD/DivX write them; FFmpeg and OpenCV output no frame for them),
    before every third P-VOP: packet counts then overstate the frames."""
    out, p_vops = [], 0
    for data, key in packets:
        if _vop_type(data) == "P":
            p_vops += 1
            if p_vops % 3 == 1:
                out.append((_n_vop(data), False))
        out.append((data, key))
    assert len(out) >= len(packets) + 3
    return out


def _trim_with_edit_list(src: Path, dst: Path, frames: int) -> Path:
    """MP4 remux with every timestamp moved back by ``frames`` frames: the mov muxer writes an edit list
    starting the presentation at 0, so the first frames are demuxed as discarded (still decoded)."""
    with av.open(str(src)) as container, av.open(str(dst), "w") as out:
        source = container.streams.video[0]
        stream = out.add_stream_from_template(source)
        step = int(1 / (source.average_rate * source.time_base))
        for packet in container.demux(source):
            if packet.dts is None:
                continue
            packet.pts -= frames * step
            packet.dts -= frames * step
            packet.stream = stream
            out.mux(packet)
    with av.open(str(dst)) as container:
        assert any(p.is_discard for p in container.demux(container.streams.video[0]))
    return dst


_MPEG4 = {"sc_threshold": "1000000000"}  # P-frames, not a scene cut at every changed frame
_X264 = {"x264-params": "bframes=3:b-pyramid=normal:open-gop=1:keyint=12:min-keyint=12:scenecut=0"}


def _clip(kind: str, tmp_path: Path) -> Path:
    if kind.startswith("x264") and "libx264" not in av.codecs_available:
        pytest.skip("this PyAV build has no libx264 encoder")
    if kind == "mpeg4-bframes.avi":
        return _encode(tmp_path / kind, "mpeg4", _MPEG4, max_b_frames=2, gop_size=12)
    if kind == "mpeg4-packed.avi":
        plain = _encode(tmp_path / "plain.avi", "mpeg4", _MPEG4, max_b_frames=2, gop_size=12)
        return _write_avi(plain, tmp_path / kind, _pack_b_frames(_avi_packets(plain)))
    if kind == "mpeg4-dropped.avi":  # without B-frames, as most XviD AVIs (UCF101, HMDB51)
        plain = _encode(tmp_path / "plain.avi", "mpeg4", _MPEG4, gop_size=12)
        return _write_avi(plain, tmp_path / kind, _drop_frames(_avi_packets(plain)))
    if kind == "mpeg4-edit.mp4":
        plain = _encode(tmp_path / "b.mp4", "mpeg4", _MPEG4, max_b_frames=2, gop_size=12)
        return _trim_with_edit_list(plain, tmp_path / kind, 5)
    if kind == "x264-edit.mp4":
        return _trim_with_edit_list(_encode(tmp_path / "p.mp4", "libx264", _X264), tmp_path / kind, 4)
    return _encode(tmp_path / kind, "libx264", _X264)  # x264-pyramid-opengop.mp4 / .avi


def _full_decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    capture = cv2.VideoCapture(str(path))
    opencv = 0
    while capture.read()[0]:
        opencv += 1
    assert opencv == len(frames)  # what extract-frames numbers
    return frames


@pytest.mark.parametrize("kind", ["mpeg4-bframes.avi", "mpeg4-packed.avi", "mpeg4-dropped.avi",
                                  "mpeg4-edit.mp4",
                                  "x264-pyramid-opengop.mp4", "x264-pyramid-opengop.avi", "x264-edit.mp4"])
def test_frames_are_those_of_a_full_sequential_decode(tmp_path, kind):
    path = _clip(kind, tmp_path)
    expected = _full_decode(path)
    assert count_video_frames(path) == len(expected)
    got = read_video(path, lambda n: list(range(n)))
    assert len(got) == len(expected)
    assert [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if not np.array_equal(a, b)] == []
    for i in range(len(expected)):  # one frame alone: nothing before it is wanted, so most are skipped
        assert np.array_equal(read_video(path, lambda n, i=i: [i])[0], expected[i]), f"frame {i}"
    rng = random.Random(kind)
    for _ in range(10):
        subset = sorted(rng.sample(range(len(expected)), 4)) + [rng.randrange(len(expected))]
        got = read_video(path, lambda n, subset=subset: subset)
        assert all(np.array_equal(a, expected[i]) for a, i in zip(got, subset, strict=True)), subset


def test_reference_example_is_exact(example_avi):
    expected = _full_decode(example_avi)
    assert count_video_frames(example_avi) == len(expected) == 131
    got = read_video(example_avi, lambda n: [0, 1, 64, 65, 130, 7])
    assert all(np.array_equal(a, expected[i]) for a, i in zip(got, [0, 1, 64, 65, 130, 7], strict=True))
