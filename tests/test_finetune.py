"""The fine-tuning recipe's parts: frozen stages, partial BN, class weights, balanced sampler, mixup/cutmix."""

from collections import Counter

import pytest
import torch
import yaml
from conftest import write_frames

from tsnctl.config import Config, ModelConfig, TrainConfig, load_config
from tsnctl.engine.finetune import BalancedSampler, class_weights, freeze
from tsnctl.engine.loss import Criterion, cutmix, smooth_one_hot
from tsnctl.engine.train import train
from tsnctl.errors import UserError
from tsnctl.models.bn import FrozenBatchNorm2d
from tsnctl.weights.checkpoint import load_checkpoint
from tsnctl.weights.init import build_model


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_steps(model, steps=2):
    """Two SGD steps on random clips, with model.train() called as a training loop does."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        model.train()
        clips = torch.randn(4, 2, 3, 32, 32, generator=generator)
        loss = torch.nn.functional.cross_entropy(model(clips), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _changed(before, after, key):
    return not torch.equal(before[key], after[key])


def test_freeze_stages_keeps_stem_and_first_stages_and_their_bn_statistics():
    model = build_model(ModelConfig(backbone="resnet18", num_classes=3, dropout=0.0))
    frozen = freeze(model, freeze_stages=1)
    assert frozen == ["backbone.conv1", "backbone.bn1", "backbone.layer1"]
    before = _snapshot(model)
    _train_steps(model)
    after = _snapshot(model)
    for key in before:
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith(("backbone.conv1.", "backbone.bn1.", "backbone.layer1.")):
            assert not _changed(before, after, key), key  # weights, affine and running stats all fixed
        else:
            assert _changed(before, after, key), key  # layer2.. and the head train, their BN stats move
    assert not model.backbone.bn1.training and model.backbone.layer2[0].bn1.training


def test_partial_bn_freezes_every_bn_but_the_first_and_survives_train():
    model = build_model(ModelConfig(backbone="resnet18", num_classes=3, dropout=0.0))
    freeze(model, partial_bn=True)
    model.train()  # must not undo it
    assert model.backbone.bn1.training and not model.backbone.layer1[0].bn1.training
    assert isinstance(model.backbone.layer4[1].bn2, FrozenBatchNorm2d)
    before = _snapshot(model)
    _train_steps(model)
    after = _snapshot(model)
    bn_keys = [k for k in before if ".bn" in k or "downsample.1." in k]
    first = [k for k in bn_keys if k.startswith("backbone.bn1.") and "num_batches" not in k]
    rest = [k for k in bn_keys if not k.startswith("backbone.bn1.") and "num_batches" not in k]
    assert all(_changed(before, after, k) for k in first)  # the first BN learns and tracks statistics
    assert not any(_changed(before, after, k) for k in rest)  # the others: statistics and affine fixed
    assert _changed(before, after, "backbone.layer1.0.conv1.weight") and _changed(before, after, "head.fc.weight")
    assert model.state_dict().keys() == build_model(ModelConfig(backbone="resnet18", num_classes=3)).state_dict().keys()


def test_frozen_parameters_get_no_gradient():
    model = build_model(ModelConfig(backbone="resnet18", num_classes=3))
    freeze(model, freeze_stages=4)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.fc.weight", "head.fc.bias"}  # N=4: a linear probe


def test_class_weights_auto_is_inverse_frequency():
    weights = class_weights([0, 0, 0, 0, 1, 2, 2, 2], num_classes=4)
    assert weights.tolist() == pytest.approx([8 / (3 * 4), 8 / (3 * 1), 8 / (3 * 3), 1.0])
    criterion = Criterion(TrainConfig(), 3, weights[:3])
    logits = torch.zeros(2, 3)
    rare, common = criterion(logits, torch.tensor([1, 1])), criterion(logits, torch.tensor([0, 0]))
    assert rare.item() == pytest.approx(common.item())  # weighted mean: same per-clip loss on uniform logits
    logits, labels = torch.tensor([[2.0, 0, 0], [2.0, 0, 0]]), torch.tensor([1, 0])  # the rare clip is wrong
    unweighted, weighted = Criterion(TrainConfig(), 3)(logits, labels), criterion(logits, labels)
    assert weighted.item() > unweighted.item()  # its error counts more


def test_balanced_sampler_draws_classes_evenly_and_splits_ranks_disjointly():
    labels = [0] * 90 + [1] * 9 + [2] * 1
    single = BalancedSampler(labels, seed=3)
    single.set_epoch(2)
    order = list(single)
    counts = Counter(labels[i] for i in order)
    assert len(order) == 100 and all(20 < counts[c] < 50 for c in range(3))  # ~33 each, not 90/9/1
    ranks = [BalancedSampler(labels, rank=r, num_replicas=3, seed=3) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(2)
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [33, 33, 33]
    interleaved = [shares[i % 3][i // 3] for i in range(99)]
    assert interleaved == order[:99]  # the ranks' shares are disjoint positions of the one global order
    single.set_epoch(2)
    assert list(single) == order  # fixed by (seed, epoch): resumable
    single.set_epoch(3)
    assert list(single) != order


def test_mixup_blends_clips_and_targets_with_one_lambda():
    cfg = TrainConfig(mixup_alpha=0.4, label_smoothing=0.1)
    clips = torch.stack([torch.full((2, 3, 4, 4), float(i)) for i in range(4)])
    labels = torch.tensor([0, 1, 2, 0])
    mixed, targets = Criterion(cfg, 3).mix(clips, labels, epoch=0, step=5)
    assert targets.shape == (4, 3) and torch.allclose(targets.sum(1), torch.ones(4))
    for i in range(4):
        values = mixed[i].unique()
        assert len(values) == 1  # the same blend in every segment and pixel
    again, _ = Criterion(cfg, 3).mix(clips, labels, epoch=0, step=5)
    assert torch.equal(mixed, again)  # seeded by (seed, epoch, step, rank)


def test_cutmix_pastes_the_same_box_into_every_segment():
    import numpy as np

    clips = torch.zeros(2, 3, 1, 20, 20)
    clips[1] = 1.0
    mixed, lam = cutmix(clips, torch.tensor([1, 0]), 0.75, np.random.default_rng(1))
    pasted = mixed[0, :, 0] == 1.0
    assert all(torch.equal(pasted[0], pasted[t]) for t in range(3))
    assert pasted[0].float().mean().item() == pytest.approx(1 - lam)
    assert 0 < 1 - lam <= 0.25 + 1e-6


def test_mixup_and_cutmix_together_switch_per_batch():
    cfg = TrainConfig(mixup_alpha=1.0, cutmix_alpha=1.0, mix_switch_prob=0.5)
    clips = torch.stack([torch.full((2, 3, 8, 8), float(i)) for i in range(4)])
    kinds = set()
    for step in range(20):
        mixed, targets = Criterion(cfg, 3).mix(clips, torch.tensor([0, 1, 2, 1]), step=step)
        kinds.add("cutmix" if len(mixed[0, 0].unique()) > 1 else "mixup")
        loss = Criterion(cfg, 3)(torch.zeros(4, 3, requires_grad=True), targets)
        assert torch.isfinite(loss)
    assert kinds == {"mixup", "cutmix"}


def test_smooth_one_hot_matches_torch_label_smoothing():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 2, 0])
    soft = smooth_one_hot(labels, 4, 0.2)
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)
    assert torch.nn.functional.cross_entropy(logits, soft).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(("override", "key"), [
    ("model.freeze_stages=5", "model.freeze_stages"), ("model.freeze_stages=-2", "model.freeze_stages"),
    ("train.class_weights=inverse", "train.class_weights"), ("train.sampler=weighted", "train.sampler"),
    ("train.mixup_alpha=-0.1", "train.mixup_alpha"), ("train.mix_prob=1.5", "train.mix_prob"),
])
def test_recipe_options_are_checked(override, key):
    with pytest.raises(UserError, match=key):
        load_config(None, [override])


def test_finetune_run_keeps_frozen_weights_of_its_init(tmp_path):
    """One epoch with every recipe option on an imbalanced list: the frozen part ends as the init had it."""
    lines = []
    for i, label in enumerate([0, 0, 0, 0, 0, 1, 1, 2]):
        write_frames(tmp_path / f"clip{i}", 6, seed=i)
        lines.append(f"clip{i} 6 {label}")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    source = build_model(ModelConfig(backbone="resnet18", num_classes=5))
    torch.save(source.state_dict(), tmp_path / "source.pt")
    cfg = load_config(None, [
        f"data.train_list={tmp_path / 'train.txt'}", "data.short_side=40", "data.crop_size=32", "data.num_workers=0",
        "model.backbone=resnet18", "model.num_classes=3", f"model.init_from={tmp_path / 'source.pt'}",
        "model.freeze_stages=2", "model.partial_bn=true", "train.class_weights=auto", "train.sampler=balanced",
        "train.mixup_alpha=0.2", "train.cutmix_alpha=1.0", "train.label_smoothing=0.1", "train.batch_size=4",
        "train.epochs=1", "train.num_seg=2", "train.fc_lr_mult=10", "train.lr=0.05", "train.device=cpu",
    ])
    assert isinstance(cfg, Config)
    result = train(cfg, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    init = source.state_dict()
    for key in ("backbone.conv1.weight", "backbone.bn1.running_mean", "backbone.layer2.1.conv2.weight",
                "backbone.layer2.1.bn2.running_var", "backbone.layer4.0.bn1.weight"):
        assert torch.equal(state[key], init[key]), key  # frozen stages, and BN after bn1 (partial BN)
    assert not torch.equal(state["backbone.layer3.0.conv1.weight"], init["backbone.layer3.0.conv1.weight"])
    assert state["head.fc.weight"].shape == (3, 512)
    assert result.epochs_run == 1 and all(map(lambda x: x == x, result.step_losses))
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["freeze_stages"] == 2 and saved["train"]["sampler"] == "balanced"


def test_init_from_a_checkpoint_of_other_classes_keeps_only_the_backbone(tmp_path):
    from tsnctl.weights.checkpoint import save_checkpoint

    source = build_model(ModelConfig(backbone="resnet18", num_classes=3))
    torch.nn.init.constant_(source.head.fc.bias, 7.0)
    save_checkpoint(tmp_path / "src.pt", {"model": source.state_dict(), "config": Config().to_dict(),
                                          "class_names": ["walk", "run", "jump"]})
    cfg = ModelConfig(backbone="resnet18", num_classes=3, init_from=str(tmp_path / "src.pt"))
    same = build_model(cfg, ["walk", "run", "jump"])
    other = build_model(cfg, ["red", "green", "blue"])
    assert same.head.fc.bias[0].item() == 7.0 and other.head.fc.bias[0].item() == 0.0
    assert torch.equal(other.backbone.conv1.weight, source.backbone.conv1.weight)
