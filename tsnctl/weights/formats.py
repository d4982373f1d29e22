"""Read model weights in the formats users bring, detected from the file's bytes (never its extension).

Every reader returns the tensors under TSN names (``backbone.<torchvision ResNet key>``, ``head.fc.weight``
``[C, F]``, ``head.fc.bias``) plus the file's own name of each, so errors can name what the user sees.

- tsnctl checkpoints and torch files (a zip): ``torch.load(weights_only=True)``; MMAction2 metadata types
  are admitted only from an explicit allow-list, with stand-ins that run nothing.
- reference ``.pdparams`` (a plain pickle of numpy arrays): a restricted unpickler that admits numpy's
  array reconstruction and nothing else, so a crafted file can never run code.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tsnctl.errors import UserError
from tsnctl.weights.checkpoint import FORMAT as TSNCTL_FORMAT

PDPARAMS_METADATA_KEY = "StructuredToParameterName@@"
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first object of torch's pre-zip (legacy) files


@dataclass
class Weights:
    """Tensors under TSN names, whatever the file's format."""

    fmt: str  # e.g. "reference .pdparams", for messages
    tensors: dict[str, torch.Tensor]
    origin: dict[str, str] = field(default_factory=dict)  # TSN name -> the file's key
    unknown: list[str] = field(default_factory=list)  # file keys that map to no TSN tensor
    config: dict[str, Any] | None = None  # tsnctl checkpoints only
    class_names: list[str] | None = None  # tsnctl checkpoints only

    @property
    def num_classes(self) -> int | None:
        """Classes of the stored classifier head, or None for a backbone-only file."""
        bias = self.tensors.get("head.fc.bias")
        return None if bias is None else int(bias.shape[0])

    def backbone(self) -> dict[str, torch.Tensor]:
        """The backbone tensors under torchvision ResNet names (prefix stripped)."""
        return {k.removeprefix("backbone."): v for k, v in self.tensors.items() if k.startswith("backbone.")}

    def name(self, key: str) -> str:
        return self.origin.get(key, key)


def read_weights(path: str | Path) -> Weights:
    """Read any supported weights file; anything else is a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    if zipfile.is_zipfile(path):
        return from_torch_object(torch_load(path), str(path))
    with open(path, "rb") as f:
        magic = f.read(1)
    if magic == b"\x80":  # pickle PROTO opcode: a .pdparams, or a legacy torch file
        raw = read_restricted_pickle(path)
        if raw == TORCH_LEGACY_MAGIC:
            return from_torch_object(torch_load(path), str(path))
        return from_pdparams(raw, str(path))
    raise UserError(f"{path}: not a readable weights file (expected a tsnctl or torch checkpoint, an MMAction2 "
                    "checkpoint or a reference .pdparams)")


# --- reference .pdparams: a pickle read with a restricted unpickler ---------------------------------

def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's array reconstruction, under the module names numpy 1.x and 2.x write."""
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a class or function outside the allow-list."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """How protocol-2 pickles written by Python 3 spell bytes: ``_codecs.encode(text, "latin1")``, nothing else."""
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise RefusedGlobal(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Admits numpy arrays and plain containers; every other global is refused before anything runs."""

    ALLOWED = {**_numpy_globals(), ("collections", "OrderedDict"): OrderedDict, ("_codecs", "encode"): _latin1_encode}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal("refused persistent id")


def read_restricted_pickle(path: Path) -> Any:
    """The first object of a pickle file, built from plain containers and numpy arrays only."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as exc:
        raise UserError(f"{path}: refused to load: {exc} (a .pdparams may hold only numpy arrays; this file "
                        "could run code)") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pickles raise many types
        raise UserError(f"{path}: not a readable .pdparams ({exc.__class__.__name__}: {str(exc)[:120]})") from None


_PD_BN = {"weight": "weight", "bias": "bias", "_mean": "running_mean", "_variance": "running_var"}
_PD_STEM = re.compile(r"conv\.(_conv\.weight|_batch_norm\.(\w+))")
_PD_BLOCK = re.compile(r"res([2-5])([a-z])(\d*)\.(conv(\d)|short)\.(_conv\.weight|_batch_norm\.(\w+))")
_PD_HEAD = re.compile(r"(head\.fc|fc|out)\.(weight|bias)")


def reference_key(key: str) -> str | None:
    """TSN name of a reference (PaddleVideo) key, or None. See docs for the table.

    Blocks are ``res{S}{L}`` (L = a, b, c ... -> index 0, 1, 2) or ``res{S}b{n}`` (ResNet-101/152: index n);
    ``conv{k}`` is torchvision's ``conv{k+1}``/``bn{k+1}``; ``short`` is the projection shortcut.
    """
    if match := _PD_HEAD.fullmatch(key):
        return f"head.fc.{match[2]}"
    name = key.removeprefix("backbone.")
    if match := _PD_STEM.fullmatch(name):
        return "backbone.conv1.weight" if match[2] is None else _pd_bn("backbone.bn1", match[2])
    if match := _PD_BLOCK.fullmatch(name):
        stage, letter, number, part, conv_index, _, bn_field = match.groups()
        index = int(number) if number else ord(letter) - ord("a")
        block = f"backbone.layer{int(stage) - 1}.{index}"
        if part == "short":
            conv, bn = f"{block}.downsample.0", f"{block}.downsample.1"
        else:
            conv, bn = f"{block}.conv{int(conv_index) + 1}", f"{block}.bn{int(conv_index) + 1}"
        return f"{conv}.weight" if bn_field is None else _pd_bn(bn, bn_field)
    return None


def _pd_bn(prefix: str, field_name: str) -> str | None:
    return f"{prefix}.{_PD_BN[field_name]}" if field_name in _PD_BN else None


def from_pdparams(raw: Any, source: str) -> Weights:
    """A reference state dict: name -> float32 array; the fc weight is stored [in, out] and is transposed."""
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{source}: not a .pdparams state dict (a pickle of {type(raw).__name__})")
    weights = Weights("reference .pdparams", {})
    for key, value in raw.items():
        if key == PDPARAMS_METADATA_KEY:  # Paddle's map of structured names; not a tensor
            continue
        if not isinstance(key, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise UserError(f"{source}: entry {key!r} is not a numeric array ({type(value).__name__})")
        name = reference_key(key)
        if name is None:
            weights.unknown.append(key)
            continue
        tensor = torch.from_numpy(np.array(value, dtype=np.float32))
        if name == "head.fc.weight":
            tensor = tensor.t().contiguous()  # Paddle's Linear stores [in, out]; torch wants [out, in]
        weights.tensors[name], weights.origin[name] = tensor, key
    return weights


# --- torch files: tsnctl checkpoints, MMAction2 checkpoints, torchvision state dicts ---------------

class MetadataStandIn:
    """Takes the place of another library's metadata class (e.g. mmengine's HistoryBuffer) while loading:
    it keeps the pickled state as plain data and has no behaviour, so nothing of that library runs."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _metadata_globals() -> dict[str, Any]:
    """The only non-tensor globals admitted in torch files: numpy arrays, scalars, dtypes, and stand-ins."""
    allowed = {f"{module}.{name}": obj for (module, name), obj in _numpy_globals().items()}
    # MMAction2 1.x checkpoints keep mmengine's training log (HistoryBuffer objects) in 'message_hub'.
    allowed["mmengine.logging.history_buffer.HistoryBuffer"] = MetadataStandIn
    return allowed


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, admitting the allow-listed metadata types when the file needs them."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # it needs globals beyond tensors: see below which
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or foreign files all end here
        raise UserError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - e.g. legacy (pre-zip) files, which it cannot list
        raise UserError(f"{path}: refused to load: it needs types beyond tensors ({_first_line(exc)})") from None
    allowed = _metadata_globals()
    refused = [name for name in needed if name not in allowed]
    if refused:
        raise UserError(f"{path}: refused to load: it needs {', '.join(refused[:3])}, which could run code "
                        "(only tensors, numpy arrays and known metadata types are admitted)")
    # numpy dtypes are rebuilt through their concrete classes (Float32DType ...), which are never named.
    dtype_classes = [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                                 np.int64, np.uint8, np.bool_)]
    with torch.serialization.safe_globals([(allowed[name], name) for name in needed] + dtype_classes):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


_MM_STEM = re.compile(r"backbone\.conv1\.(conv\.weight|bn\.(\w+))")
# MMAction2's TSM wraps the first conv of each block: ``conv1.conv.net.weight`` (its TemporalShift has no weights).
_MM_BLOCK = re.compile(r"backbone\.(layer\d\.\d+)\.conv(\d)\.(conv(?:\.net)?\.weight|bn\.(\w+))")
_MM_SHORT = re.compile(r"backbone\.(layer\d\.\d+)\.downsample\.(conv\.weight|bn\.(\w+))")
_MM_HEAD = re.compile(r"cls_head\.fc_cls\.(weight|bias)")


def mmaction_key(key: str) -> str | None:
    """TSN name of an MMAction2 1.x ResNet/ResNetTSM/TSNHead/TSMHead key (ConvModule = ``.conv`` + ``.bn``),
    or None."""
    if match := _MM_HEAD.fullmatch(key):
        return f"head.fc.{match[1]}"
    if match := _MM_STEM.fullmatch(key):
        return "backbone.conv1.weight" if match[2] is None else f"backbone.bn1.{match[2]}"
    if match := _MM_BLOCK.fullmatch(key):
        block, index, _, bn_field = match.groups()
        return f"backbone.{block}.conv{index}.weight" if bn_field is None else f"backbone.{block}.bn{index}.{bn_field}"
    if match := _MM_SHORT.fullmatch(key):
        block, _, bn_field = match.groups()
        prefix = f"backbone.{block}.downsample"
        return f"{prefix}.0.weight" if bn_field is None else f"{prefix}.1.{bn_field}"
    return None


def from_torch_object(raw: Any, source: str) -> Weights:
    """A tsnctl checkpoint, or a state dict (bare or under ``state_dict``) in one of the known key styles."""
    if isinstance(raw, dict) and raw.get("format") == TSNCTL_FORMAT:
        weights = from_state_dict(raw["model"], source)
        weights.fmt, weights.config = "tsnctl checkpoint", raw["config"]
        weights.class_names = list(raw.get("class_names") or []) or None
        return weights
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    return from_state_dict(state, source)


def from_state_dict(state: Any, source: str) -> Weights:
    """Detect the key style (MMAction2, tsnctl, torchvision) and rename to TSN names."""
    if not isinstance(state, dict) or not state:
        raise UserError(f"{source}: expected a state dict of tensors, got {type(state).__name__}")
    if all(isinstance(k, str) and k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    keys = list(state)
    if any(k.startswith(("backbone.conv1.conv.", "cls_head.")) for k in keys):
        fmt, rename = "MMAction2 checkpoint", mmaction_key
    elif any(k.startswith(("backbone.", "head.")) for k in keys):
        fmt, rename = "tsnctl state dict", _same_key
    elif "conv1.weight" in state:
        fmt, rename = "torchvision ResNet state dict", _torchvision_key
    else:
        raise UserError(f"{source}: unrecognised weight names (first: {', '.join(map(str, keys[:3]))}); expected "
                        "a tsnctl, MMAction2, torchvision or reference (.pdparams) model")
    weights = Weights(fmt, {})
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: entry {key!r} is not a tensor ({type(value).__name__})")
        name = rename(key)
        if name is None:
            weights.unknown.append(key)
        else:
            weights.tensors[name], weights.origin[name] = value, key
    return weights


def _same_key(key: str) -> str | None:
    return key if key.startswith(("backbone.", "head.")) else None


def _torchvision_key(key: str) -> str:
    return f"head.{key}" if key.startswith("fc.") else f"backbone.{key}"


# --- filling a module ---------------------------------------------------------------------------

def load_into(module: nn.Module, tensors: dict[str, torch.Tensor], source: str, what: str,
              names: dict[str, str] | None = None, unknown: list[str] | None = None) -> None:
    """Fill every parameter and buffer of ``module`` from ``tensors`` (keys = the module's own names).

    Refuses, naming keys as the file spells them, unless every module entry gets a tensor of the right
    shape and every tensor is used. ``num_batches_tracked`` counters absent from the file (reference files
    carry none) are set to 0: they only matter for BN momentum=None, which TSN does not use.
    """
    names = names or {}
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = list(unknown or []) + [names.get(k, k) for k in tensors if k not in expected]
    mismatched = [f"{names.get(k, k)} {list(v.shape)} (model {list(expected[k].shape)})"
                  for k, v in tensors.items() if k in expected and v.shape != expected[k].shape]
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                if keys]
    if problems:
        raise UserError(f"{source}: does not fit {what}: {'; '.join(problems)}")
    state = {k: tensors[k] if k in tensors else torch.zeros_like(v) for k, v in expected.items()}
    module.load_state_dict(state, strict=True)
