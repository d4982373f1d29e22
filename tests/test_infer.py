"""CPU inference backends: every backend's logits equal the eager fp32 model's within 1e-4 relative."""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import write_frames, write_tiny_checkpoint
from typer.testing import CliRunner

from tsnctl.cli import app
from tsnctl.data.transforms import normalize
from tsnctl.deploy.infer import EagerTSN, FastTSN, NormalizedConv, fuse_batchnorm, inference_model
from tsnctl.models.tsm import set_num_segments
from tsnctl.models.tsn import TSN

runner = CliRunner()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).detach().abs().max() / want.detach().abs().max())


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BatchNorm statistics and affine terms away from their init, so that folding them is really tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
    return model.eval()


def clips(n: int, views: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """uint8 ``[n, views, 3, size, size]`` laid out ``[..., H, W, 3]`` in memory, as the clip loader gives them."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, views, size, size, 3), dtype=torch.uint8, generator=gen).permute(0, 1, 4, 2, 3)


@pytest.mark.parametrize("views", [3, 8, 13])  # fewer, as many and more views than a chunk (8)
def test_fast_backend_matches_eager(views):
    torch.manual_seed(0)
    model = trained_like(TSN("resnet18", 5))
    x = clips(2, views)
    want = EagerTSN(copy.deepcopy(model))(x)
    got = FastTSN(model)(x)
    assert relative_error(got, want) < 1e-4


def test_fast_backend_matches_eager_with_temporal_shift():
    torch.manual_seed(1)
    model = trained_like(TSN("resnet18", 4, temporal_shift=True))
    set_num_segments(model, 4)
    x = clips(1, 12)  # 4 segments x 3 crops
    want = EagerTSN(copy.deepcopy(model))(x)
    assert relative_error(FastTSN(model)(x), want) < 1e-4


def test_normalization_folded_into_conv_is_exact_at_the_borders():
    """Bright borders: a zero-padded raw image differs from a zero-padded normalized one right there."""
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False)
    x = torch.zeros(1, 3, 30, 30, dtype=torch.uint8)
    x[..., :4, :], x[..., -4:, :], x[..., :, :4] = 255, 200, 255
    want = conv(normalize(x))
    folded = NormalizedConv(conv)
    assert relative_error(folded(x), want) < 1e-5
    folded.fill.zero_()  # what a naive fold (plain zero padding) would compute
    assert relative_error(folded(x), want) > 1e-2


def test_batchnorm_is_gone_after_fusion():
    model = trained_like(TSN("resnet18", 3))
    fuse_batchnorm(model.backbone)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend"):
        inference_model(TSN("resnet18", 3), "turbo")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    torch.manual_seed(3)
    write_tiny_checkpoint(root / "model.pt", 3, "ten", model=trained_like(TSN("resnet18", 3)))
    write_frames(root / "clip", 9)
    return root


def predicted(args: list[str]) -> list[dict]:
    result = runner.invoke(app, ["predict", *args, "--json", "--topk", "3"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]["topk"]


def test_predict_backends_give_the_same_probabilities(checkpoint):
    clip, weights = str(checkpoint / "clip"), str(checkpoint / "model.pt")
    eager = predicted([clip, "-w", weights, "--backend", "eager"])
    fast = predicted([clip, "-w", weights])
    assert [e["index"] for e in eager] == [e["index"] for e in fast]
    np.testing.assert_allclose([e["prob"] for e in fast], [e["prob"] for e in eager], rtol=1e-4, atol=1e-6)


def test_onnx_views_in_chunks_match_one_run(checkpoint):
    """30 views (3 segments x TenCrop) run as 8 + 8 + 8 + 6: the view-weighted mean equals the whole clip's logits."""
    from tsnctl.deploy.runtime import OnnxClassifier, inference_session

    result = runner.invoke(app, ["export", "-w", str(checkpoint / "model.pt"), "-o", str(checkpoint / "m.onnx")])
    assert result.exit_code == 0, result.output
    session = inference_session(checkpoint / "m.onnx")
    x = clips(2, 30, 32)
    whole = OnnxClassifier(session)(x, normalize)
    chunked = OnnxClassifier(session, chunked=True)(x, normalize)
    assert relative_error(chunked, whole) < 1e-4
    eager = predicted([str(checkpoint / "clip"), "-w", str(checkpoint / "model.pt"), "--backend", "eager"])
    onnx = predicted([str(checkpoint / "clip"), "-m", str(checkpoint / "m.onnx")])
    np.testing.assert_allclose([e["prob"] for e in onnx], [e["prob"] for e in eager], rtol=1e-4, atol=1e-6)


def test_bench_predict_times_each_backend_in_a_cold_process(checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "predict", str(checkpoint / "clip"), "-w", str(checkpoint / "model.pt"),
                                 "--num-seg", "2", "--repeats", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    assert [v["name"] for v in bench["variants"]] == ["eager", "fast"]
    assert [r["variant"] for r in bench["runs"]] == ["eager", "fast"]
    for run in bench["runs"]:
        assert run["stages_s"]["model"] > 0 and run["stages_s"]["clip"] > 0 and run["stages_s"]["start-up"] > 0
        assert 50 < run["max_rss_mb"] < 100_000
    assert bench["variants"][0]["ratio_to_eager"] == 1.0


def test_bench_predict_reports_a_failing_child_in_one_line(checkpoint):
    result = runner.invoke(app, ["bench", "predict", str(checkpoint / "clip"), "-w", str(checkpoint / "nope.pt"),
                                 "--repeats", "1"])
    assert result.exit_code == 1
    assert "predict (eager) failed" in result.output and "Traceback" not in result.output
