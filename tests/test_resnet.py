"""Our ResNet (``tsnctl.models.resnet``) is torchvision's: names, shapes, initialisation and outputs.

Every weights importer, ImageNet weights, TSM's wrapping and ONNX names rely on torchvision's key names, so
the comparison is exact: the same keys in the same order, the same shapes, the same seeded initial
weights, and bit-identical outputs (eval and train mode, including the running statistics a training
step leaves). Also: the ``tsnctl predict`` import chain does not import torchvision (its start-up cost).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from tsnctl.models import resnet

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def build_pair(name: str, seed: int = 0, num_classes: int = 1000) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    ours = getattr(resnet, name)(num_classes=num_classes)
    torch.manual_seed(seed)
    theirs = getattr(torchvision.models, name)(num_classes=num_classes)
    return ours, theirs


@pytest.mark.parametrize("name", DEPTHS)
def test_state_dict_keys_shapes_and_seeded_init_are_torchvision_s(name):
    ours, theirs = build_pair(name)
    mine, ref = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(ref)  # the same names, in the same order
    assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in ref.items()}
    # The same initialisation, drawn in the same order: a seeded model starts where torchvision's does.
    assert all(torch.equal(mine[k], ref[k]) for k in ref)
    convs = [m for m in ours.modules() if isinstance(m, torch.nn.Conv2d)]
    fan_out = convs[0].out_channels * convs[0].kernel_size[0] * convs[0].kernel_size[1]
    assert abs(convs[0].weight.std().item() - (2.0 / fan_out) ** 0.5) < 0.1 * (2.0 / fan_out) ** 0.5
    bns = [m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((bn.weight == 1).all()) and bool((bn.bias == 0).all()) for bn in bns)


def perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict with every tensor random (BN statistics too), so no layer is the identity."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=gen) * (0.5 if value.dim() < 2 else 0.05)
    return state


@pytest.mark.parametrize("name", DEPTHS)
def test_same_weights_give_identical_outputs_in_eval_and_train_mode(name):
    ours, theirs = build_pair(name, seed=1, num_classes=7)
    state = perturbed(theirs, seed=2)
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))
    out, ref = ours.train()(x), theirs.train()(x)
    assert torch.equal(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    grads = {k: p.grad for k, p in theirs.named_parameters()}
    assert all(torch.equal(p.grad, grads[k]) for k, p in ours.named_parameters())
    # A training step moved the running statistics the same way.
    mine, after = ours.state_dict(), theirs.state_dict()
    assert all(torch.equal(mine[k], after[k]) for k in after)
    assert not torch.equal(after["bn1.running_mean"], state["bn1.running_mean"])


def test_a_wrong_implementation_fails_the_comparison():
    """The output check can fail: a ResNet-50 with the stride on the first 1x1 (v1, the paper's) differs."""
    ours, theirs = build_pair("resnet50", seed=1)
    block = ours.layer2[0]
    block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        assert not torch.allclose(ours.eval()(x), theirs.eval()(x))


PREDICT_CHAIN = ("tsnctl.cli", "tsnctl.workflow", "tsnctl.deploy.predict", "tsnctl.deploy.infer",
                 "tsnctl.deploy.runtime", "tsnctl.weights.load", "tsnctl.models.tsn")


def imported_after(modules: tuple[str, ...]) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``modules``."""
    code = ("import importlib, sys\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    return set(result.stdout.split())


def test_the_predict_import_chain_does_not_import_torchvision():
    """torchvision's import runs torchvision.ops and torch._dynamo: ~1.5 s of every ``tsnctl predict``."""
    loaded = imported_after(PREDICT_CHAIN)
    assert "torch" in loaded and "tsnctl" in loaded  # the check sees what the chain imports
    assert "torchvision" not in loaded
    assert "torchvision" in imported_after(("tsnctl.models.tsn", "torchvision.models"))
