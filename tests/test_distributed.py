"""Distributed training and testing on CPU with gloo: the same numbers as one process, every video once."""

from __future__ import annotations

import csv
import os

import pytest
import torch
from conftest import write_frames
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import RandomSampler
from typer.testing import CliRunner

from tsnctl import launch as launcher
from tsnctl.cli import app
from tsnctl.config import config_from_dict, load_config
from tsnctl.data.dataset import ClipSettings
from tsnctl.engine import parallel
from tsnctl.engine import ranks as dist
from tsnctl.engine.loaders import clip_loader
from tsnctl.errors import UserError
from tsnctl.weights.init import build_model

runner = CliRunner()
NUM_CLIPS = 10


def cli(*args):
    return runner.invoke(app, list(map(str, args)))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Ten frame folders of three classes and a frame list; a test list with an odd number (5) of them."""
    root = tmp_path_factory.mktemp("dist")
    lines = []
    for i in range(NUM_CLIPS):
        write_frames(root / f"clip_{i}", 6, seed=i)
        lines.append(f"clip_{i} 6 {i % 3}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "test.txt").write_text("\n".join(lines[:5]) + "\n")
    return root


def tiny_overrides(root, batch_size: int) -> list[str]:
    return [f"data.train_list={root / 'train.txt'}", f"data.test_list={root / 'test.txt'}", "data.short_side=48",
            "data.crop_size=32", "data.num_workers=0", "model.backbone=resnet18", "model.num_classes=3",
            "model.dropout=0", "train.num_seg=2", "train.epochs=2", "train.lr=0.2", "train.lr_steps=[]",
            f"train.batch_size={batch_size}", "train.device=cpu", "test.num_seg=2"]


# --- unit checks ------------------------------------------------------------------------------------------------

def test_parse_gpus():
    assert dist.parse_gpus("0-7", available=8) == list(range(8))
    assert dist.parse_gpus("0,1,3", available=8) == [0, 1, 3]
    assert dist.parse_gpus("0-1,3, 1", available=4) == [0, 1, 3]
    assert dist.parse_gpus("all", available=2) == [0, 1]
    with pytest.raises(UserError, match=r"GPU 2, 3 not found \(this machine has 2 GPU\(s\): cuda:0..cuda:1\)"):
        dist.parse_gpus("0-3", available=2)
    with pytest.raises(UserError, match="GPU 0, 1 not found .*no CUDA GPU"):
        dist.parse_gpus("0-1", available=0)
    with pytest.raises(UserError, match="expected GPU indices"):
        dist.parse_gpus("zero", available=2)


def test_slurm_environment_becomes_torch_environment():
    env = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
           "SLURM_STEP_NODELIST": "gpu[03-04,9]"}
    assert dist.env_from_slurm(env) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1",
                                        "MASTER_ADDR": "gpu03", "MASTER_PORT": "29500"}
    assert dist.env_from_slurm({**env, "MASTER_ADDR": "head", "MASTER_PORT": "1234"})["MASTER_ADDR"] == "head"
    assert dist.env_from_slurm({k: v for k, v in env.items() if k != "SLURM_STEP_ID"}) == {}  # the batch script
    assert dist.env_from_slurm({**env, "RANK": "0"}) == {}  # torchrun's variables win
    assert dist.first_slurm_host("node7,node8") == "node7"


def test_launch_plan_checks_options(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launcher.launch_plan("cpu") is None
    plan = launcher.launch_plan("cpu", nproc=2)
    assert (plan.nproc_per_node, plan.gpus, plan.device) == (2, [], "cpu")
    static = launcher.launch_plan("cpu", nproc=2, nnodes="2", node_rank=1, master_addr="node0")
    assert (static.nnodes, static.node_rank, static.master_addr) == ("2", 1, "node0")
    with pytest.raises(UserError, match="needs --master-addr"):
        launcher.launch_plan("cpu", nproc=2, nnodes="2")
    with pytest.raises(UserError, match="MIN:MAX range needs --rdzv-endpoint"):
        launcher.launch_plan("cpu", nproc=2, nnodes="1:4", master_addr="x")
    with pytest.raises(UserError, match="contradict"):
        launcher.launch_plan("cpu", gpus="0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(UserError, match="already running under torchrun"):
        launcher.launch_plan("cpu", nproc=2)


def test_gather_by_index_puts_rows_back_in_order_once():
    indices = torch.tensor([2, 0, 1, 0])  # 0 twice, as a padded sampler would give it
    logits = torch.tensor([[2.0], [0.0], [1.0], [0.0]])
    (ordered,) = dist.gather_by_index(indices[:3], logits[:3])
    assert ordered.flatten().tolist() == [0.0, 1.0, 2.0]
    unique, first = dist._first_occurrence(indices)
    assert unique.tolist() == [0, 1, 2] and first.tolist() == [1, 2, 0]


def test_shared_memory_check_names_the_fix(tmp_path):
    parallel.check_shared_memory(4, 32, 3, 224, 8, shm=str(tmp_path / "absent"))  # no /dev/shm: nothing to check
    with pytest.raises(UserError, match=r"DataLoader workers need about .* --shm-size"):
        parallel.check_shared_memory(10**6, 32, 8, 224, 8, shm=str(tmp_path))


def test_train_order_is_the_old_random_sampler_order(clips):
    """One process keeps the order of the former RandomSampler seeded with seed * 100_003 + epoch."""
    cfg = load_config(None, tiny_overrides(clips, 4))
    from tsnctl.engine.loaders import read_split

    samples = read_split(cfg, cfg.data.train_list, "train")
    loader = clip_loader(samples, ClipSettings("frames", 2, 48, 32, mode="train"), 4, 0, shuffle=True,
                         seed=7 * 100_003)
    for epoch in (0, 3):
        loader.sampler.set_epoch(epoch)
        old = RandomSampler(range(NUM_CLIPS), generator=torch.Generator().manual_seed(7 * 100_003 + epoch))
        assert list(loader.sampler) == [(epoch, index) for index in old]  # (epoch, index) keys for the workers


def test_gradient_accumulation_matches_a_bigger_batch(clips, tmp_path, monkeypatch):
    """2 micro-batches of 2 clips with accumulate=2 take the same steps as batches of 4 (BN frozen)."""
    from tsnctl.engine.train import train

    monkeypatch.setattr(_BatchNorm, "train", _frozen_bn_mode)
    big = train(load_config(None, tiny_overrides(clips, 4) + ["train.epochs=1"]), tmp_path / "big")
    small = train(load_config(None, tiny_overrides(clips, 2) + ["train.epochs=1", "train.accumulate=2"]),
                  tmp_path / "small")
    assert len(small.step_losses) == 2 * len(big.step_losses) == 4
    pairs = torch.tensor(small.step_losses).view(-1, 2).mean(1)
    assert torch.allclose(pairs, torch.tensor(big.step_losses), atol=1e-5)
    assert_same_weights(tmp_path / "big" / "last.pt", tmp_path / "small" / "last.pt")


def test_bf16_autocast_trains_on_cpu(clips, tmp_path):
    cfg = load_config(None, tiny_overrides(clips, 8) + ["train.epochs=1", "train.amp=bf16",
                                                       "train.channels_last=true"])
    from tsnctl.engine.train import train

    result = train(cfg, tmp_path / "amp")
    assert len(result.step_losses) == 1 and all(torch.isfinite(torch.tensor(result.step_losses)))


def test_missing_gpus_fail_with_one_line(tmp_path):
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two GPUs")
    result = cli("train", "--gpus", "0-1", "--output", tmp_path / "run")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--gpus 0-1: GPU" in lines[0] and "not found" in lines[0], result.output


def test_fp16_needs_cuda(clips, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = cli("train", *[x for o in tiny_overrides(clips, 4) for x in ("-o", o)], "--amp", "fp16",
                 "--output", tmp_path / "run")
    assert result.exit_code == 2 and "train.amp=fp16 needs a CUDA GPU" in result.output


# --- several processes ------------------------------------------------------------------------------------------

def _frozen_bn_mode(self, mode=True):
    """BatchNorm stays in eval mode: per-rank batch statistics would otherwise differ from one big batch."""
    return nn.Module.train(self, False)


def _train_with_frozen_bn(cfg_dict, output_dir, progress=None):
    """A worker entry (top level, so spawned processes can unpickle it) that freezes BatchNorm first."""
    _BatchNorm.train = _frozen_bn_mode
    return launcher.train_entry(cfg_dict, output_dir, False, False)


def assert_same_weights(path_a, path_b, atol=1e-5):
    a = torch.load(path_a, weights_only=True)["model"]
    b = torch.load(path_b, weights_only=True)["model"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol, rtol=1e-4), key


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_global_batch(clips, tmp_path, monkeypatch):
    """2 ranks x batch 2 == 1 rank x batch 4: same clips per step (one permutation dealt round-robin), DDP's
    gradient mean == the gradient of the mean loss over 4 clips. Tolerance: float32 sums in another order."""
    from tsnctl.engine.train import train

    monkeypatch.setattr(_BatchNorm, "train", _frozen_bn_mode)
    one = train(load_config(None, tiny_overrides(clips, 4)), tmp_path / "one")
    two_cfg = load_config(None, tiny_overrides(clips, 2))
    two = launcher.launch(launcher.launch_plan("cpu", nproc=2), _train_with_frozen_bn,
                      (two_cfg.to_dict(), str(tmp_path / "two")))
    assert len(one.step_losses) == len(two.step_losses) == 4  # 2 epochs x (10 clips // global batch 4)
    assert torch.allclose(torch.tensor(two.step_losses), torch.tensor(one.step_losses), atol=1e-5)
    assert_same_weights(tmp_path / "one" / "last.pt", tmp_path / "two" / "last.pt")
    torch.manual_seed(0)  # train.seed: the initial weights of both runs
    init = build_model(config_from_dict({"model": {"backbone": "resnet18", "num_classes": 3}}).model).state_dict()
    trained = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    assert (trained["head.fc.weight"] - init["head.fc.weight"]).abs().max() > 1e-2  # far beyond the tolerance
    assert config_from_dict(torch.load(tmp_path / "two" / "last.pt", weights_only=True)["config"]).train.batch_size == 2


@pytest.mark.slow
def test_distributed_cli_train_and_test_score_every_video_once(clips, tmp_path):
    """`train --nproc 2` writes one set of files; `test --nproc 2` on 5 videos == `test` in one process."""
    args = [x for o in tiny_overrides(clips, 2) + ["train.epochs=1"] for x in ("-o", o)]
    result = cli("train", *args, "--nproc", 2, "--device", "cpu", "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [(r["epoch"], r["split"]) for r in rows] == [("1", "train")]  # written by rank 0 only
    weights = tmp_path / "run" / "last.pt"

    single = cli("test", "-w", weights, "--save-scores", tmp_path / "one.csv", "--device", "cpu")
    assert single.exit_code == 0, single.output
    multi = cli("test", "-w", weights, "--save-scores", tmp_path / "two.csv", "--nproc", 2, "--device", "cpu")
    assert multi.exit_code == 0, multi.output
    one, two = (list(csv.reader(open(tmp_path / f"{n}.csv"))) for n in ("one", "two"))
    assert [r[0] for r in two[1:]] == [f"clip_{i}" for i in range(5)]  # every video once, in list order
    for a, b in zip(one[1:], two[1:], strict=True):
        assert a[:2] == b[:2]
        assert torch.allclose(torch.tensor([float(v) for v in a[2:]]), torch.tensor([float(v) for v in b[2:]]),
                              atol=1e-5)
    assert "5 videos" in multi.output and os.path.getsize(tmp_path / "two.csv") > 0


@pytest.mark.slow
def test_two_processes_skip_and_list_a_bad_clip_and_save_every_ranks_rng(clips, tmp_path):
    """A corrupt frame on one rank's clip: the ranks still step together, rank 0 lists it once, and the
    mid-epoch checkpoints hold both ranks' RNG states (the ranks agree on when to save)."""
    data = tmp_path / "data"
    for i in range(8):
        write_frames(data / f"c{i}", 4, seed=i)
    (data / "c3" / "img_00002.jpg").write_bytes(b"garbage")
    (data / "train.txt").write_text("".join(f"c{i} 4 {i % 3}\n" for i in range(8)))
    overrides = tiny_overrides(clips, 2) + [f"data.train_list={data / 'train.txt'}", "train.epochs=1",
                                            "train.checkpoint_steps=1", "train.max_bad_fraction=0.2"]
    result = cli("train", *[x for o in overrides for x in ("-o", o)], "--nproc", 2, "--device", "cpu",
                 "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "run" / "bad_samples.csv")))
    assert [(r["split"], r["index"], r["path"]) for r in rows] == [("train", "3", "c3")]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (state["epoch"], state["global_step"]) == (1, 2) and len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])


# --- GPUs (benchmarks/gpu.sh runs these with pytest -m cuda) -------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


@pytest.mark.cuda
@needs_cuda
def test_fp16_channels_last_training_on_a_gpu(clips, tmp_path):
    from tsnctl.engine.train import train

    cfg = load_config(None, tiny_overrides(clips, 4) + ["train.epochs=1", "train.device=cuda", "train.amp=fp16",
                                                       "train.channels_last=true"])
    result = train(cfg, tmp_path / "run")
    assert len(result.step_losses) == 2 and all(torch.isfinite(torch.tensor(result.step_losses)))


@pytest.mark.cuda
@needs_two_gpus
def test_two_gpus_with_sync_bn_match_one_gpu_with_the_global_batch(clips, tmp_path):
    """NCCL + SyncBatchNorm: BN statistics over both GPUs, so BN stays in train mode for the comparison.
    Tolerance 1e-3: cuDNN picks different kernels for batch 2 and 4, and reductions run in another order."""
    from tsnctl.engine.train import train

    one = train(load_config(None, tiny_overrides(clips, 4) + ["train.device=cuda"]), tmp_path / "one")
    two_cfg = load_config(None, tiny_overrides(clips, 2) + ["train.device=cuda", "train.sync_bn=true"])
    two = launcher.launch(launcher.launch_plan("cuda", gpus="0,1"), launcher.train_entry,
                      (two_cfg.to_dict(), str(tmp_path / "two"), False, False))
    assert torch.allclose(torch.tensor(two.step_losses), torch.tensor(one.step_losses), atol=1e-3)
