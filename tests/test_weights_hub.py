"""Published weights by name: a loopback HTTP server stands in for the model zoos; nothing else is downloaded."""

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.config import ModelConfig
from tsnctl.errors import UserError
from tsnctl.weights import hub
from tsnctl.weights.init import build_model

runner = CliRunner()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A folder served on 127.0.0.1, set as the weights mirror; the torch hub cache in tmp_path."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(hub.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    yield folder
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _publish(monkeypatch, folder: Path, payload: Path, claimed: str | None = None) -> str:
    """Serve ``payload`` under a table entry whose file name carries the hash prefix ``claimed`` (default: its
    own); returns the entry's name."""
    prefix = claimed or hashlib.sha256(payload.read_bytes()).hexdigest()[:8]
    filename = f"tsn_test_resnet18-{prefix}.pth"
    (folder / filename).write_bytes(payload.read_bytes())
    entry = hub.Published(f"https://example.invalid/zoo/{filename}", "MMAction2", "resnet18", False, 3, 0.0)
    monkeypatch.setitem(hub.PUBLISHED, "test-tsn-r18", entry)
    return "test-tsn-r18"


def _weights_file(tmp_path) -> tuple[Path, dict]:
    model = build_model(ModelConfig(backbone="resnet18", num_classes=4))
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def test_name_downloads_into_the_hub_cache_with_its_hash_checked(served, tmp_path, monkeypatch):
    payload, expected = _weights_file(tmp_path)
    name = _publish(monkeypatch, served, payload)
    model = build_model(ModelConfig(backbone="resnet18", num_classes=4, init_from=name))
    assert torch.equal(model.state_dict()["backbone.layer3.1.conv2.weight"], expected["backbone.layer3.1.conv2.weight"])
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / hub.PUBLISHED[name].filename
    assert cached.read_bytes() == payload.read_bytes()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no partial file left
    (served / cached.name).unlink()  # the cache is used from now on, without the network
    build_model(ModelConfig(backbone="resnet18", num_classes=4, init_from=name))


def test_a_download_with_the_wrong_hash_is_refused_and_removed(served, tmp_path, monkeypatch):
    payload, _ = _weights_file(tmp_path)
    name = _publish(monkeypatch, served, payload, claimed="0badf00d")
    with pytest.raises(UserError, match="does not match 0badf00d") as info:
        hub.fetch(name)
    assert info.value.exit_code == 1
    assert list((tmp_path / "torch_home" / "hub" / "checkpoints").iterdir()) == []


def test_a_cached_file_with_the_wrong_hash_is_refused(served, tmp_path, monkeypatch):
    payload, _ = _weights_file(tmp_path)
    name = _publish(monkeypatch, served, payload, claimed="0badf00d")
    cached = hub.cache_path(name)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(payload.read_bytes())
    with pytest.raises(UserError, match=f"{cached}: sha256"):
        hub.fetch(name)


def test_offline_train_fails_in_one_line_naming_url_and_destination(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port with nothing listening: as offline as it gets without a network
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(hub.MIRROR_ENV, f"http://127.0.0.1:{port}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    name = "mmaction2-tsn-r50-1x1x8-k400"
    result = runner.invoke(app, ["train", "--init-from", name, "--output", str(tmp_path / "run")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    filename = hub.PUBLISHED[name].filename
    assert f"http://127.0.0.1:{port}/{filename}" in lines[0]
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints" / filename) in lines[0]
    assert not (tmp_path / "torch_home" / "hub" / "checkpoints").exists() or \
        not list((tmp_path / "torch_home" / "hub" / "checkpoints").iterdir())


def test_a_local_file_always_works_and_unknown_names_list_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.MIRROR_ENV, "http://127.0.0.1:9")  # would fail if anything tried the network
    payload, expected = _weights_file(tmp_path)
    model = build_model(ModelConfig(backbone="resnet18", num_classes=4, init_from=str(payload)))
    assert torch.equal(model.state_dict()["head.fc.weight"], expected["head.fc.weight"])
    with pytest.raises(UserError, match="mmaction2-tsn-r50-1x1x3-k400"):
        build_model(ModelConfig(backbone="resnet18", num_classes=4, init_from="tsn-kinetics"))


def test_a_name_must_fit_the_configured_network_before_any_download(monkeypatch):
    monkeypatch.setenv(hub.MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(UserError, match="model.temporal_shift=true") as info:
        build_model(ModelConfig(init_from="mmaction2-tsm-r50-1x1x8-k400"))
    assert info.value.exit_code == 2


def test_published_table_is_consistent():
    files = [entry.filename for entry in hub.PUBLISHED.values()]
    assert len(set(files)) == len(files)
    for name, entry in hub.PUBLISHED.items():
        assert entry.url.startswith("https://") and name.endswith("k400")
        if entry.source == "MMAction2":
            assert entry.sha256_prefix and len(entry.sha256_prefix) == 8, name
        else:
            assert entry.url.endswith(".pdparams") and entry.sha256_prefix is None


def test_docs_list_every_published_name_and_url():
    text = (Path(__file__).resolve().parent.parent / "docs" / "finetune.md").read_text()
    for name, entry in hub.PUBLISHED.items():
        assert f"`{name}`" in text and entry.url in text, name
