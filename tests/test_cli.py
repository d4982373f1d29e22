"""Command-line behaviour: help texts, one-line errors, exit codes."""

import re

import pytest
from typer.testing import CliRunner

from tsnctl.cli import app

runner = CliRunner()
COMMANDS = ["demo-data", "extract-frames", "check", "train", "test", "export", "predict", "convert-weights"]


def run(*args):
    return runner.invoke(app, list(map(str, args)))


def test_help_lists_every_command_with_a_description():
    result = run("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert re.search(rf"{command}\s+\S", result.output), command


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_text(command):
    from typer.main import get_command

    click_command = get_command(app).commands[command]
    for param in click_command.params:
        if param.param_type_name == "option":
            assert param.help, f"{command} {param.opts} has no help"
        else:
            assert getattr(param, "help", None), f"{command} argument {param.name} has no help"


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.output.startswith("tsnctl ")


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.output
    text = " ".join(lines)
    for fragment in fragments:
        assert fragment in text, text


def test_missing_config_file(tmp_path):
    one_line_error(run("train", "-c", tmp_path / "nope.yaml"), "nope.yaml", "config file not found")


def test_unknown_config_key(tmp_path):
    one_line_error(run("train", "-o", "train.learning_rate=0.1"), "unknown key 'train.learning_rate'")


def test_malformed_list_line(tmp_path):
    (tmp_path / "train.txt").write_text("clip_a 10 0\nclip_b ten 1\n")
    result = run("train", "-o", f"data.train_list={tmp_path / 'train.txt'}", "--output", tmp_path / "run")
    one_line_error(result, "train.txt:2", "num_frames must be an integer")


def test_missing_weights_and_clips(tmp_path):
    one_line_error(run("test", "-w", tmp_path / "none.pt"), "none.pt: weights file not found")
    one_line_error(run("predict", tmp_path / "none.mp4", "-w", tmp_path / "none.pt"), "none.pt")
    (tmp_path / "fake.pt").write_text("not a checkpoint")
    one_line_error(run("export", "-w", tmp_path / "fake.pt", "-o", tmp_path / "m.onnx"), "fake.pt: not a readable")
    one_line_error(run("predict", tmp_path / "x.mp4"), "exactly one of -w")


def test_gpu_device_on_a_cpu_machine(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "train.txt").write_text("clip_a 10 0\n")
    result = run("train", "--device", "cuda", "-o", f"data.train_list={tmp_path / 'train.txt'}",
                 "--output", tmp_path / "run")
    one_line_error(result, "no CUDA GPU is available")


def test_extract_frames_reports_bad_videos(tmp_path):
    from conftest import write_video

    write_video(tmp_path / "src" / "walk" / "good.mp4", 6)
    (tmp_path / "src" / "walk" / "broken.mp4").write_bytes(b"\x00" * 100)
    result = run("extract-frames", tmp_path / "src", tmp_path / "out", "--workers", "1")
    assert result.exit_code == 1
    assert "broken.mp4" in result.output and "1 of 2 videos could not be extracted" in result.output
    assert (tmp_path / "out" / "frame_list.txt").read_text() == "walk/good.mp4 6 0\n"
    assert sorted(p.name for p in (tmp_path / "out" / "walk").iterdir()) == ["good.mp4"]
