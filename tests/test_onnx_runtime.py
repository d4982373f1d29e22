"""ONNX models in test and predict: the same scores as the checkpoint, and clear provider errors."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from conftest import write_frames, write_tiny_checkpoint
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.models.tsn import TSN

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = TSN("resnet18", 3)
    write_tiny_checkpoint(root / "model.pt", 2, "three", model=model, num_workers=0)
    lines = []
    for i in range(3):
        write_frames(root / "frames" / f"clip{i}", 5 + i, seed=i)
        lines.append(f"frames/clip{i} {5 + i} {i}\n")
    (root / "list.txt").write_text("".join(lines))
    result = runner.invoke(app, ["export", "-w", str(root / "model.pt"), "-o", str(root / "model.onnx")])
    assert result.exit_code == 0, result.output
    return root


def scores(path):
    return [[float(v) for v in row[2:]] for row in list(csv.reader(open(path)))[1:]]


def test_onnx_test_scores_equal_the_checkpoint(exported):
    root = exported
    common = ["--list", str(root / "list.txt"), "-o", "data.num_workers=0"]
    by_ckpt = runner.invoke(app, ["test", "-w", str(root / "model.pt"), *common, "--save-scores", str(root / "a.csv")])
    by_onnx = runner.invoke(app, ["test", "-m", str(root / "model.onnx"), *common, "--save-scores",
                                  str(root / "b.csv")])
    assert by_ckpt.exit_code == 0, by_ckpt.output
    assert by_onnx.exit_code == 0, by_onnx.output
    assert "2 segments x 3 crops (ThreeCrop)" in by_onnx.output
    torch.testing.assert_close(torch.tensor(scores(root / "b.csv")), torch.tensor(scores(root / "a.csv")),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("command", ["test", "predict"])
def test_missing_gpu_provider_is_a_one_line_error(exported, command):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    args = [command, "-m", str(exported / "model.onnx"), "--provider", "cuda"]
    args += ["--list", str(exported / "list.txt")] if command == "test" else [str(exported / "frames" / "clip0")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "no CUDAExecutionProvider" in result.output and "Traceback" not in result.output


def test_fp16_export_is_verified_and_predicts_like_fp32(exported):
    root = exported
    result = runner.invoke(app, ["export", "-w", str(root / "model.pt"), "-o", str(root / "half.onnx"), "--fp16"])
    assert result.exit_code == 0, result.output
    assert "fp16" in result.output
    proto = onnx.load(str(root / "half.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert (root / "half.onnx").stat().st_size < 0.6 * (root / "model.onnx").stat().st_size
    clip = str(root / "frames" / "clip1")
    full = runner.invoke(app, ["predict", clip, "-m", str(root / "model.onnx"), "--json"])
    half = runner.invoke(app, ["predict", clip, "-m", str(root / "half.onnx"), "--json"])
    a, b = json.loads(full.stdout)[0]["topk"], json.loads(half.stdout)[0]["topk"]
    assert a[0]["label"] == b[0]["label"]
    assert a[0]["prob"] == pytest.approx(b[0]["prob"], abs=1e-2)


# ``tsnctl predict`` run as a user runs it; then the packages its process imported (function-level imports too).
PREDICT_THEN_LIST_MODULES = """
import json, sys
from tsnctl.cli import main
listing, sys.argv = sys.argv[1], ["tsnctl", "predict", *sys.argv[2:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
open(listing, "w").write(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("source", ["-w", "-m"])
def test_predict_imports_neither_torchvision_nor_onnx(exported, source, tmp_path):
    """Start-up is a third of a cold ``predict``: torchvision alone (it imports torch._dynamo) took ~1.5 s."""
    model = exported / ("model.pt" if source == "-w" else "model.onnx")
    listing = tmp_path / "modules.json"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", PREDICT_THEN_LIST_MODULES, str(listing), str(exported / "frames" / "clip0"),
                    source, str(model), "--json"], check=True, capture_output=True, cwd=root,
                   env={**os.environ, "PYTHONPATH": str(root)})
    modules = set(json.loads(listing.read_text()))
    assert "torch" in modules and ("onnxruntime" in modules) == (source == "-m")  # it saw the predict run
    assert not {"torchvision", "onnx", "torch._dynamo"} & modules
