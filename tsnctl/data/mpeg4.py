"""Frames an MPEG-4 Part 2 (DivX/XviD) stream yields, counted from its VOP headers without decoding.

FFmpeg (so PyAV and OpenCV) outputs no frame for a not-coded VOP ("N-VOP", ``vop_coded`` = 0), which
DivX/XviD write for dropped frames and, in "packed bitstream" AVIs, as the placeholder packet after a
packet holding two VOPs (a reference and a B-frame). That placeholder does yield a frame: the decoder
(its ``mpeg4_unpack_bframes`` step) puts the stored B-frame in its place. Counting packets would count
every N-VOP, and the last frames of such a clip would then be missing.
"""

from __future__ import annotations

VOP = b"\x00\x00\x01\xb6"


def frames_per_packet(packets: list[bytes], extradata: bytes | None) -> list[int] | None:
    """How many frames each packet yields (0 or 1), or None when the headers cannot be read."""
    bits = _time_increment_bits((extradata or b"") + (packets[0] if packets else b""))
    if bits is None:
        return None
    counts, pending_b = [], False
    for data in packets:
        vops = _vop_starts(data)
        if len(vops) >= 2:  # packed: the first VOP now, the second in place of the next packet
            coded = _vop_coded(data, vops[0], bits)
            pending_b = True
        elif len(vops) == 1 and pending_b:
            coded, pending_b = True, False
        elif len(vops) == 1:
            coded = _vop_coded(data, vops[0], bits)
        else:
            coded = False  # headers only (VOL, user data)
        if coded is None:
            return None
        counts.append(int(coded))
    return counts


def _vop_starts(data: bytes) -> list[int]:
    starts, at = [], data.find(VOP)
    while at >= 0:
        starts.append(at + 4)
        at = data.find(VOP, at + 4)
    return starts


def _bits(data: bytes, start: int, count: int) -> str:
    return "".join(f"{byte:08b}" for byte in data[start:start + count])


def _vop_coded(data: bytes, at: int, increment_bits: int) -> bool | None:
    """vop_coded of the VOP header at byte ``at``; None when its marker bits do not line up."""
    bits = _bits(data, at, 8)
    pos = 2  # vop_coding_type
    while pos < len(bits) and bits[pos] == "1":  # modulo_time_base
        pos += 1
    pos += 1
    end = pos + 1 + increment_bits + 1
    if end >= len(bits) or bits[pos] != "1" or bits[end - 1] != "1":
        return None
    return bits[end] == "1"


def _time_increment_bits(data: bytes) -> int | None:
    """Width of vop_time_increment, from the first video object layer header (ISO 14496-2 6.2.3)."""
    at = data.find(b"\x00\x00\x01")
    while at >= 0 and not (at + 3 < len(data) and 0x20 <= data[at + 3] <= 0x2F):
        at = data.find(b"\x00\x00\x01", at + 3)
    if at < 0:
        return None
    try:
        return _vol_increment_bits(_bits(data, at + 4, 24))
    except (IndexError, ValueError):  # a header cut short
        return None


def _vol_increment_bits(bits: str) -> int | None:
    pos = 9  # random_accessible_vol, video_object_type_indication
    verid = 1
    if bits[pos] == "1":  # is_object_layer_identifier: verid, priority
        verid, pos = int(bits[pos + 1:pos + 5], 2), pos + 7
    pos += 1
    aspect, pos = int(bits[pos:pos + 4], 2), pos + 4
    pos += 16 if aspect == 0xF else 0
    if bits[pos] == "1":  # vol_control_parameters: chroma_format, low_delay, vbv_parameters
        pos += 4 + (79 if bits[pos + 4] == "1" else 0)
    pos += 1
    shape, pos = int(bits[pos:pos + 2], 2), pos + 2
    pos += 4 if shape == 3 and verid != 1 else 0
    if pos + 17 > len(bits) or bits[pos] != "1":  # marker
        return None
    resolution = int(bits[pos + 1:pos + 17], 2)
    return max(1, (resolution - 1).bit_length()) if resolution else None
