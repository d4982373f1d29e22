import pytest
import torch

from tsnctl.config import ModelConfig
from tsnctl.errors import UserError
from tsnctl.models.tsn import TSN
from tsnctl.weights.init import build_model


def test_head_averages_features_over_views_before_the_fc():
    torch.manual_seed(0)
    model = TSN("resnet18", num_classes=5).eval()
    clips = torch.randn(2, 4, 3, 32, 32)
    features = model.forward_features(clips)
    assert features.shape == (2, 4, 512)
    expected = model.head.fc(features.mean(dim=1))
    torch.testing.assert_close(model(clips), expected)
    # Reordering the views of a clip does not change its logits: consensus is a mean.
    torch.testing.assert_close(model(clips[:, [3, 1, 0, 2]]), expected, rtol=1e-4, atol=1e-5)


def test_views_of_one_clip_do_not_leak_into_another():
    torch.manual_seed(0)
    model = TSN("resnet18", num_classes=3).eval()
    a, b = torch.randn(1, 3, 3, 32, 32), torch.randn(1, 3, 3, 32, 32)
    torch.testing.assert_close(model(torch.cat([a, b]))[0], model(a)[0], rtol=1e-4, atol=1e-5)


def test_reference_init_of_the_head():
    torch.manual_seed(0)
    model = TSN("resnet50", num_classes=400, dropout=0.4, fc_std=0.01)
    assert model.head.fc.weight.shape == (400, 2048)
    assert model.head.fc.bias.abs().max() == 0
    assert abs(model.head.fc.weight.std().item() - 0.01) < 0.0005
    assert model.head.dropout.p == 0.4
    bn = model.backbone.bn1
    assert bn.eps == 1e-5 and bn.momentum == 0.1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


@pytest.mark.parametrize(("depth", "dim"), [(18, 512), (34, 512), (50, 2048), (101, 2048), (152, 2048)])
def test_every_depth_runs_forward_and_backward(depth, dim):
    model = build_model(ModelConfig(backbone=f"resnet{depth}", num_classes=7))
    assert model.feature_dim == dim
    logits = model(torch.randn(2, 2, 3, 32, 32))
    assert logits.shape == (2, 7)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_pretrained_from_a_torchvision_state_dict(tmp_path):
    import torchvision

    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    model = build_model(ModelConfig(backbone="resnet18", num_classes=3, pretrained=str(tmp_path / "r18.pth")))
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)


def test_pretrained_mismatch_and_offline_imagenet_are_one_line_errors(tmp_path, monkeypatch):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UserError, match="does not fit resnet50"):
        build_model(ModelConfig(backbone="resnet50", pretrained=str(tmp_path / "r18.pth")))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"fetch https://.*resnet18.* and put it at .*checkpoints"):
        build_model(ModelConfig(backbone="resnet18", pretrained="imagenet"))
