"""Peer baselines that ``tsnctl bench`` measures against, kept outside the installed package.

They live in ``benchmarks/peers/`` of a source checkout (found next to this package: an editable install, or
PYTHONPATH at the checkout). They re-implement other projects' data paths only to be measured against, so
the wheel does not ship them; without a checkout the benches run and say that the baseline is missing.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tsnctl.errors import UserError

PEERS = Path(__file__).resolve().parents[2] / "benchmarks" / "peers"
MISSING = "the baseline lives in benchmarks/peers/ of a tsnctl source checkout (pip install -e .): no baseline"


def available(name: str) -> bool:
    return (PEERS / f"{name}.py").is_file()


@functools.cache
def load(name: str) -> ModuleType:
    """Import ``benchmarks/peers/<name>.py`` once, under the module name ``tsnctl_peers.<name>``."""
    path = PEERS / f"{name}.py"
    if not path.is_file():
        raise UserError(f"{path}: {MISSING}")
    spec = importlib.util.spec_from_file_location(f"tsnctl_peers.{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
