"""Published Kinetics-400 TSN/TSM weights by name, fetched once into the torch hub cache.

``--init-from NAME`` (or ``model.init_from: NAME``) looks the name up in ``PUBLISHED``, downloads the file to
``<torch hub dir>/checkpoints/<file name>`` (``TORCH_HOME`` moves it) and hands the path to the readers in
``formats.py``; a file already there is used without any network. MMAction2 file names end in
``-<first 8 hex digits of the file's sha256>`` (the PyTorch hub convention), checked on every download and
every use; PaddleVideo's file names carry no hash, so for them nothing can be checked.

``TSNCTL_WEIGHTS_MIRROR`` (a URL prefix, e.g. an internal mirror or ``http://127.0.0.1:8000``) replaces
everything before the file name of every URL. A download goes to a temporary file in the same folder and is
renamed only once complete and verified, so an interrupted or refused download never looks finished.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from tsnctl.errors import UserError
from tsnctl.progress import ProgressFn, no_progress

MIRROR_ENV = "TSNCTL_WEIGHTS_MIRROR"
_MM = "https://download.openmmlab.com/mmaction/v1.0/recognition"
_PADDLE = "https://videotag.bj.bcebos.com"


@dataclass(frozen=True)
class Published:
    """One published checkpoint: where it is, and the model config it needs."""

    url: str
    source: str  # "PaddleVideo" (.pdparams) or "MMAction2" (.pth)
    backbone: str  # model.backbone
    temporal_shift: bool  # model.temporal_shift (TSM)
    num_seg: int  # segments per clip it was trained with (train.num_seg)
    top1: float  # Kinetics-400 top-1 reported by its model zoo

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def sha256_prefix(self) -> str | None:
        """The hash prefix the file name carries (``name-<8 hex>.pth``), or None."""
        match = re.search(r"-([0-9a-f]{8,})\.\w+$", self.filename)
        return match[1] if match else None


def _mm(model: str, folder: str, stamp: str) -> str:
    return f"{_MM}/{model}/{folder}/{folder}_{stamp}.pth"


# URLs as published in the model zoos (PaddleVideo docs/en/model_zoo/recognition/{tsn,tsm}.md; MMAction2
# configs/recognition/{tsn,tsm}/metafile.yml and README.md). Not downloaded while writing this table (no network
# here): the hash prefixes are the publishers' own.
PUBLISHED: dict[str, Published] = {
    "paddle-tsn-r50-1x1x3-k400": Published(
        f"{_PADDLE}/PaddleVideo-release2.2/TSN_k400.pdparams", "PaddleVideo", "resnet50", False, 3, 69.81),
    "paddle-tsn-r50-1x1x8-k400": Published(
        f"{_PADDLE}/PaddleVideo-release2.2/TSN_k400_8.pdparams", "PaddleVideo", "resnet50", False, 8, 71.70),
    "paddle-tsm-r50-1x1x8-k400": Published(
        f"{_PADDLE}/PaddleVideo-release2.1/TSM/TSM_k400.pdparams", "PaddleVideo", "resnet50", True, 8, 70.86),
    "mmaction2-tsn-r50-1x1x3-k400": Published(
        _mm("tsn", "tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb", "20220906-cd10898e"),
        "MMAction2", "resnet50", False, 3, 72.83),
    "mmaction2-tsn-r50-1x1x5-k400": Published(
        _mm("tsn", "tsn_imagenet-pretrained-r50_8xb32-1x1x5-100e_kinetics400-rgb", "20220906-65d68713"),
        "MMAction2", "resnet50", False, 5, 73.80),
    "mmaction2-tsn-r50-1x1x8-k400": Published(
        _mm("tsn", "tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb", "20220906-2692d16c"),
        "MMAction2", "resnet50", False, 8, 74.12),
    "mmaction2-tsn-r101-1x1x8-k400": Published(
        _mm("tsn", "tsn_imagenet-pretrained-r101_8xb32-1x1x8-100e_kinetics400-rgb", "20220906-23cff032"),
        "MMAction2", "resnet101", False, 8, 75.89),
    "mmaction2-tsm-r50-1x1x8-k400": Published(
        _mm("tsm", "tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb", "20220831-64d69186"),
        "MMAction2", "resnet50", True, 8, 72.95),
    "mmaction2-tsm-r50-1x1x8-100e-k400": Published(
        _mm("tsm", "tsm_imagenet-pretrained-r50_8xb16-1x1x8-100e_kinetics400-rgb", "20220831-a6db1e5d"),
        "MMAction2", "resnet50", True, 8, 73.11),
}


def is_published_name(source: str) -> bool:
    return source in PUBLISHED


def looks_like_name(source: str) -> bool:
    """A bare word without a folder or a suffix: meant as a published name, not a file."""
    return bool(source) and "/" not in source and os.sep not in source and "." not in source


def cache_path(name: str) -> Path:
    """Where ``name``'s file lives: the torch hub cache's ``checkpoints`` folder."""
    return Path(torch.hub.get_dir()) / "checkpoints" / PUBLISHED[name].filename


def download_url(name: str) -> str:
    entry = PUBLISHED[name]
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{entry.filename}" if mirror else entry.url


def resolve(source: str, progress: ProgressFn = no_progress) -> str:
    """A weights file path for ``source``: an existing file as is, a published name fetched (or found) in the
    cache. Anything else is returned unchanged for the readers to report, except a bare word that names neither
    a file nor a published checkpoint (an error listing the names)."""
    if Path(source).is_file() or not source:
        return source
    if source in PUBLISHED:
        return str(fetch(source, progress))
    if looks_like_name(source):
        raise UserError(f"--init-from {source}: neither a weights file nor a published name "
                        f"({', '.join(PUBLISHED)})")
    return source


def fetch(name: str, progress: ProgressFn = no_progress) -> Path:
    """The cached file of a published name, downloaded first when missing; its hash prefix checked."""
    entry, path = PUBLISHED[name], cache_path(name)
    if path.is_file():
        digest = _sha256(path)
        if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
            raise UserError(f"{path}: sha256 {digest[:8]}... does not match the {entry.sha256_prefix} its name "
                            f"promises; delete it (it is not {name}) or replace it with {entry.url}")
        return path
    url = download_url(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _download(url, out, f"download {name}", progress)
        if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
            raise UserError(f"{url}: downloaded file's sha256 {digest[:8]}... does not match {entry.sha256_prefix}; "
                            "refused and removed", exit_code=1)
        os.replace(tmp, path)
    except OSError as exc:  # no network, DNS, refused, HTTP error, disk full: all end the same way
        raise UserError(f"cannot download {name} from {url} ({_reason(exc)}): fetch it yourself and put it at "
                        f"{path}, or pass --init-from with the file's path", exit_code=1) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _download(url: str, out, task: str, progress: ProgressFn) -> str:
    """Stream ``url`` into ``out``; returns the sha256 hex digest of what was written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - http(s) URLs of the table above
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            progress(task, done, max(total, done), f"{done / 1e6:.0f} MB")
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
    return " ".join(str(reason).split())
