"""export --int8: calibrated static quantization, checked against fp32 top-1, refused over --max-drop."""

import re

import onnx
import pytest
import torch
from conftest import write_frames, write_tiny_checkpoint
from typer.testing import CliRunner

from tsnctl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random ResNet-18 TSN over 3 classes and 6 small frame clips listed twice (calibration, validation)."""
    root = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    write_tiny_checkpoint(root / "model.pt", 2, "center", num_workers=0)
    lines = []
    for i in range(6):
        write_frames(root / "frames" / f"clip{i}", 5 + i, seed=i)
        lines.append(f"frames/clip{i} {5 + i} {i % 3}\n")
    (root / "calib.txt").write_text("".join(lines[:4]))
    (root / "val.txt").write_text("".join(lines))
    return root


def export_int8(root, out, *extra):
    return runner.invoke(app, ["export", "-w", str(root / "model.pt"), "-o", str(out), "--int8",
                               "--calib-list", str(root / "calib.txt"), "--val-list", str(root / "val.txt"),
                               "--override", f"data.root={root}", *extra])


def test_int8_export_writes_a_quantized_model_and_reports_both_top1(tiny, tmp_path):
    out = tmp_path / "int8.onnx"
    result = export_int8(tiny, out, "--max-drop", "100")
    assert result.exit_code == 0, result.output
    found = re.search(r"fp32 (\d+\.\d+)%, int8 (\d+\.\d+)% \(drop (-?\d+\.\d+) points", result.output)
    assert found, result.output
    fp32, int8, drop = map(float, found.groups())
    assert abs(fp32 - int8 - drop) < 0.01 and "6 videos" in result.output
    proto = onnx.load(str(out))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: really quantized
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["tsnctl.precision"] == "int8" and meta["tsnctl.class_names"] == '["a", "b", "c"]'
    predicted = runner.invoke(app, ["predict", str(tiny / "frames" / "clip0"), "-m", str(out), "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert '"label"' in predicted.output


def test_int8_over_max_drop_is_refused_with_one_line_and_no_file(tiny, tmp_path):
    out = tmp_path / "int8.onnx"
    # The measured drop is >= -100 points, so a limit below that always refuses.
    result = export_int8(tiny, out, "--max-drop", "-100")
    assert result.exit_code == 1, result.output
    assert "over --max-drop -100" in result.output and "not written" in result.output
    lines = result.output.strip().splitlines()
    assert "not written" in lines[-1] and "Traceback" not in result.output
    assert [line for line in lines if "INFO" not in line or "int8 " not in line] == lines[-1:]  # progress only
    assert list(tmp_path.iterdir()) == []  # neither the model nor a partial file


@pytest.mark.parametrize("extra, message", [
    (["--max-drop", "nan"], "--max-drop nan"),
    (["--max-drop", "1000"], "--max-drop 1000"),
    (["--fp16"], "exclude each other"),
])
def test_bad_int8_options_exit_2(tiny, tmp_path, extra, message):
    result = export_int8(tiny, tmp_path / "int8.onnx", *extra)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "int8.onnx").exists()


def test_int8_missing_lists_exit_2(tiny, tmp_path):
    base = ["export", "-w", str(tiny / "model.pt"), "-o", str(tmp_path / "q.onnx"), "--int8"]
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "--calib-list" in result.output
    result = runner.invoke(app, [*base, "--calib-list", str(tmp_path / "missing.txt"), "--val-list",
                                 str(tiny / "val.txt")])
    assert result.exit_code == 2 and "missing.txt" in result.output, result.output
    result = runner.invoke(app, ["export", "-w", str(tiny / "model.pt"), "-o", str(tmp_path / "q.onnx"),
                                 "--calib-list", str(tiny / "calib.txt")])
    assert result.exit_code == 2 and "go with --int8" in result.output
    assert list(tmp_path.iterdir()) == []


def test_bench_onnx_times_fp32_and_int8_side_by_side(tiny, tmp_path):
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    assert runner.invoke(app, ["export", "-w", str(tiny / "model.pt"), "-o", str(fp32)]).exit_code == 0
    assert export_int8(tiny, int8, "--max-drop", "100").exit_code == 0
    result = runner.invoke(app, ["bench", "onnx", str(fp32), str(int8), "--repeats", "2", "--json",
                                 str(tmp_path / "bench.json")])
    assert result.exit_code == 0, result.output
    import json

    cases = json.loads((tmp_path / "bench.json").read_text())["cases"]
    assert [c["precision"] for c in cases] == ["fp32", "int8"] and cases[0]["speedup"] == 1.0
    assert all(c["median_ms"] > 0 for c in cases) and cases[1]["size_mb"] < cases[0]["size_mb"]
    missing = runner.invoke(app, ["bench", "onnx", str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_calibration_ranges_cover_every_calibration_clip(tiny, tmp_path):
    """One white clip among eight black ones, first in the list: the input's INT8 range must reach white's
    normalized value (onnxruntime's CalibMaxIntermediateOutputs once kept only the last few clips' ranges)."""
    import cv2
    import numpy as np
    from onnx import numpy_helper

    lines = []
    for i in range(9):
        folder = tmp_path / "frames" / f"c{i}"
        folder.mkdir(parents=True)
        for f in range(1, 6):
            cv2.imwrite(str(folder / f"img_{f:05d}.jpg"), np.full((48, 64, 3), 255 if i == 0 else 0, np.uint8))
        lines.append(f"frames/c{i} 5 {i % 3}\n")
    (tmp_path / "calib.txt").write_text("".join(lines))
    out = tmp_path / "int8.onnx"
    result = runner.invoke(app, ["export", "-w", str(tiny / "model.pt"), "-o", str(out), "--int8", "--calib-list",
                                 str(tmp_path / "calib.txt"), "--val-list", str(tmp_path / "calib.txt"), "--max-drop",
                                 "100", "--override", f"data.root={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert "calibrated on 9 clips" in result.output
    proto = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    quantize = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear")  # conv1's input: the views
    scale, zero = float(inits[quantize.input[1]]), inits[quantize.input[2]]
    white = (1.0 - 0.406) / 0.225  # the largest normalized value of a white pixel (blue channel)
    assert scale * (np.iinfo(zero.dtype).max - int(zero)) >= 0.95 * white
