"""The measured-transfer table runs end to end (tiny budget): pre-train, three arms, one markdown table."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_transfer_table_prints_every_arm(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "transfer_table.py"), "--out", str(tmp_path), "--seeds", "0",
         "--per-class", "2", "--val-per-class", "1", "--epochs", "1", "--batch-size", "4",
         "--pretrain-per-class", "2", "--pretrain-epochs", "1"],
        capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == [
        "| scratch (demo recipe)", "| scratch (fine-tune recipe)", "| fine-tune"]
    assert (tmp_path / "runs" / "fine-tune_2pc_seed0" / "best.pt").is_file()
    assert (tmp_path / "runs" / "pretrain_shapes" / "best.pt").is_file()
