"""Reading the text files a user hands us (lists, label files, configs) as UTF-8, with one clear line when
they are not: which file, which byte, which line, and what encoding it probably is."""

from __future__ import annotations

import os
from pathlib import Path

from tsnctl.errors import UserError

_BOMS = {b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)"}


def read_utf8(path: str | Path, what: str = "file") -> str:
    """The text of ``path``; a missing file, a folder or bytes that are not UTF-8 raise UserError naming it.

    A UTF-8 byte-order mark is accepted (Windows editors write one); UTF-16 and Latin-1 are not guessed
    at, because a silently mis-decoded path would point at a different file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found" if not path.exists() else f"{path}: {what} is not a file")
    data = path.read_bytes()
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise UserError(f"{path}: {name} text; save the {what} as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        f"save the {what} as UTF-8") from None
    if "\x00" in text:
        offset = text.index("\x00")
        line = text.count("\n", 0, offset) + 1
        raise UserError(f"{path}:{line}: NUL character in a text {what} (a binary file?)")
    return text


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``; on any failure (disk full,
    read-only folder, Ctrl-C) the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:  # name the file the user asked for, not our temporary one
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
