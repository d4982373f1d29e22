"""Nothing tsnctl reads can run code: checkpoints via weights_only, configs via safe_load, no pickle."""

import re
from pathlib import Path

import pytest
import torch

from tsnctl.errors import UserError
from tsnctl.weights.checkpoint import load_checkpoint

SOURCES = sorted((Path(__file__).resolve().parents[1] / "tsnctl").rglob("*.py"))


def test_every_torch_load_is_weights_only():
    for path in SOURCES:
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, f"{path}: {call}"


# The one reader of pickles: reference .pdparams files through an allow-listed Unpickler (numpy arrays and
# plain containers only); test_weight_import checks that it refuses a payload that would run code.
RESTRICTED_UNPICKLER = Path("weights") / "formats.py"


def test_no_unsafe_deserialisers():
    unsafe = re.compile(r"\bpickle\b|\bdill\b|\bcloudpickle\b|yaml\.load\(|yaml\.unsafe_load|yaml\.full_load|"
                        r"np\.load\([^)]*allow_pickle=True|(?<![.\w])eval\(|(?<![.\w])exec\(")
    for path in SOURCES:
        if path.parts[-2:] == RESTRICTED_UNPICKLER.parts:
            text = path.read_text()
            assert "pickle.load(" not in text and "pickle.loads(" not in text, path
            assert "def find_class" in text, f"{path}: the Unpickler must keep its allow-list"
            continue
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            assert not unsafe.search(line), f"{path}:{line_no}: {line.strip()}"


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path, capsys):
    torch.save({"format": "tsnctl-checkpoint-1", "model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="evil.pt: refused to load: it holds a Python object of type print"):
        load_checkpoint(tmp_path / "evil.pt")
    assert "code ran" not in capsys.readouterr().out
