"""Every command on a table of hostile inputs: exit 1 or 2, exactly one error line on stderr, no traceback,
nothing written outside the row's output folder and no temporary file left behind.

Rows run in-process (CliRunner keeps stderr apart from stdout; ``capfd`` also catches what native code such as
onnxruntime or FFmpeg writes straight to file descriptor 2), and a few run as real subprocesses so the
interpreter's own traceback printing is covered too. A read-only folder and a full disk are real tmpfs mounts
(root only: chmod does not stop root); without root those rows are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from conftest import write_frames, write_video
from onnx import TensorProto
from onnx import helper as oh
from typer.testing import CliRunner

import tsnctl
from tsnctl.cli import app
from tsnctl.config import Config, save_config
from tsnctl.models.tsn import TSN
from tsnctl.weights.checkpoint import save_checkpoint

runner = CliRunner()
ROOT = Path(tsnctl.__file__).resolve().parent.parent  # the tsnctl under test, also for the subprocesses


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def tiny_onnx(path: Path, meta: dict[str, str], absurd: bool = False) -> None:
    """A model with tsnctl's input/output names; ``absurd`` asks onnxruntime for ~10^17 bytes at run time (the
    shape comes from the input, so it cannot be folded away when the session is created)."""
    nodes = [oh.make_node("ReduceMean", ["clips"], ["m"], axes=[1, 2, 3, 4], keepdims=0),
             oh.make_node("Unsqueeze", ["m", "ax"], ["m1"]), oh.make_node("Concat", ["m1", "m1"], ["l0"], axis=1)]
    inits = [oh.make_tensor("ax", TensorProto.INT64, [1], [1])]
    if absurd:
        nodes += [oh.make_node("Shape", ["clips"], ["s"]), oh.make_node("Mul", ["s", "big"], ["s2"]),
                  oh.make_node("ConstantOfShape", ["s2"], ["huge"]),
                  oh.make_node("ReduceSum", ["huge"], ["z"], keepdims=0), oh.make_node("Mul", ["l0", "z"], ["logits"])]
        inits.append(oh.make_tensor("big", TensorProto.INT64, [5], [1, 1, 1 << 16, 1 << 16, 1 << 10]))
    else:
        nodes.append(oh.make_node("Identity", ["l0"], ["logits"]))
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("clips", TensorProto.FLOAT, ["N", "V", 3, "H", "W"])],
                          [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


META = {"tsnctl.class_names": json.dumps(["a", "b"]), "tsnctl.num_seg": "2", "tsnctl.crop": "center",
        "tsnctl.short_side": "40", "tsnctl.crop_size": "32", "tsnctl.image_template": "img_{:05d}.jpg"}


def tiny_config() -> Config:
    cfg = Config()
    cfg.model.backbone, cfg.model.num_classes = "resnet18", 2
    cfg.data.short_side, cfg.data.crop_size, cfg.data.num_workers = 40, 32, 0
    cfg.data.train_list = cfg.data.test_list = "list.txt"
    cfg.train.num_seg, cfg.train.batch_size, cfg.train.epochs, cfg.train.device = 2, 2, 1, "cpu"
    cfg.test.num_seg, cfg.test.crop = 2, "center"
    return cfg


def _mount(folder: Path, options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """Good and bad inputs side by side, plus RO (read-only), FULL (no byte free) and SMALL (256 KiB) mounts."""
    s = tmp_path_factory.mktemp("hostile")
    for i in range(2):
        write_frames(s / "frames" / f"clip{i}", 4, seed=i)
    (s / "list.txt").write_text("frames/clip0 4 0\nframes/clip1 4 1\n")
    write_video(s / "videos" / "walk" / "clip.mp4", 6)
    (s / "vlist.txt").write_text("videos/walk/clip.mp4 0\n")
    (s / "latin1.txt").write_bytes("frames/café 4 0\n".encode("latin-1"))
    (s / "utf16.txt").write_bytes("frames/clip0 4 0\n".encode("utf-16"))
    (s / "binary.txt").write_bytes(b"frames/clip0 4 0\n\x00\x01\x02")
    (s / "empty.txt").write_text("# nothing but a comment\n\n")
    (s / "labels.txt").write_text("a\nb\n")
    (s / "merged_shard.txt").write_text("walk/clip.mp4 6 0\n")
    (s / "afile").write_text("a file where a folder is expected\n")
    (s / "broken.mp4").write_bytes(b"not a video" * 8)
    for name in ("tree/walk/a.mp4", "tree/walk/b.mp4", "tree/run/c.mp4", "spaced/walk/a  b.mp4"):
        write_video(s / name, 4)
    (s / "emptyclass" / "walk").mkdir(parents=True)
    (s / "linked" / "walk").mkdir(parents=True)
    (s / "linked" / "walk" / "a.mp4").symlink_to(s / "tree" / "walk" / "a.mp4")
    save_config(tiny_config(), s / "cfg.yaml")
    (s / "latin1.yaml").write_bytes("model:\n  backbone: resnet18  # é\n".encode("latin-1"))
    (s / "tagged.yaml").write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    (s / "badlist.yaml").write_text("data:\n  train_list: latin1.txt\n  test_list: latin1.txt\n")
    torch.manual_seed(0)
    cfg = tiny_config()
    save_checkpoint(s / "model.pt", {"model": TSN("resnet18", 2).state_dict(), "epoch": 0, "config": cfg.to_dict(),
                                     "class_names": ["a", "b"]})
    torch.save({"format": "tsnctl-checkpoint-1", "model": Payload()}, s / "evil.pt")
    (s / "junk.pt").write_bytes(b"not a checkpoint" * 8)
    tiny_onnx(s / "good.onnx", META)
    tiny_onnx(s / "absurd.onnx", META, absurd=True)
    tiny_onnx(s / "badmeta.onnx", {**META, "tsnctl.num_seg": "many"})
    tiny_onnx(s / "hugemeta.onnx", {**META, "tsnctl.short_side": "1000000000"})
    tiny_onnx(s / "widename.onnx", {**META, "tsnctl.image_template": "img_{:999999999d}.jpg"})
    run = s / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,split,loss,top1,top5,lr\n1,train,1.0,50,100,0.01\n")
    mounts = {"RO": _mount(s / "ro", "ro,size=64k"), "SMALL": _mount(s / "small", "size=256k"),
              "FULL": _mount(s / "full", "size=64k")}
    try:
        if mounts["FULL"]:
            _fill(s / "full" / "filler")
        yield s, mounts
    finally:  # a mount left behind would make pytest's clean-up of old tmp folders fail with EBUSY
        for name, mounted in mounts.items():
            if mounted:
                subprocess.run(["umount", str(s / name.lower())], check=False)


def _fill(path: Path) -> None:
    """Write until the file system has no block left: the next write anywhere on it gets ENOSPC."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


# (id, args with {S} = sandbox, {O} = this row's output folder, expected exit code, fragment of the message).
# {O} under {RO}/{FULL}/{SMALL} means: on that mount.
ROWS = [
    ("demo-data out is a file", ["demo-data", "{S}/afile", "--train-per-class", "1", "--val-per-class", "1"], 2,
     "afile"),
    ("demo-data read-only", ["demo-data", "{RO}/{O}", "--train-per-class", "1", "--val-per-class", "1"], 1,
     "Read-only file system"),
    ("demo-data bad kind", ["demo-data", "{O}", "--kind", "bogus"], 2, "bogus"),
    ("extract latin-1 list", ["extract-frames", "{S}/latin1.txt", "{O}"], 2, "latin1.txt:1: not UTF-8 text"),
    ("extract utf-16 list", ["extract-frames", "{S}/utf16.txt", "{O}"], 2, "UTF-16"),
    ("extract missing source", ["extract-frames", "{S}/nope", "{O}"], 2, "nope"),
    ("extract out is a file", ["extract-frames", "{S}/vlist.txt", "{S}/afile"], 2, "afile"),
    ("extract read-only", ["extract-frames", "{S}/vlist.txt", "{RO}/{O}"], 1, "Read-only file system"),
    ("extract disk full", ["extract-frames", "{S}/vlist.txt", "{FULL}/{O}", "--workers", "1"], 1,
     "videos/walk/clip.mp4: No space left on device"),
    ("extract bad shard", ["extract-frames", "{S}/vlist.txt", "{O}", "--shard", "3/2"], 2, "shard"),
    ("check empty list", ["check", "{S}/empty.txt", "--report", "{O}/r.csv"], 2, "holds no clips"),
    ("check latin-1 list", ["check", "{S}/latin1.txt", "--report", "{O}/r.csv"], 2, "not UTF-8 text (byte 0xe9"),
    ("check utf-16 list", ["check", "{S}/utf16.txt", "--report", "{O}/r.csv"], 2, "UTF-16"),
    ("check binary list", ["check", "{S}/binary.txt", "--report", "{O}/r.csv"], 2, "NUL"),
    ("check malformed -o", ["check", "{S}/list.txt", "-o", "train.lr=[1", "--report", "{O}/r.csv"], 2,
     "not a valid YAML value"),
    ("check tagged -o", ["check", "{S}/list.txt", "-o", "train.lr=!!python/object/apply:os.system [ls]",
                         "--report", "{O}/r.csv"], 2, "not a valid YAML value"),
    ("check latin-1 config", ["check", "{S}/list.txt", "-c", "{S}/latin1.yaml", "--report", "{O}/r.csv"], 2,
     "latin1.yaml:2: not UTF-8 text"),
    ("check tagged config", ["check", "{S}/list.txt", "-c", "{S}/tagged.yaml", "--report", "{O}/r.csv"], 2,
     "tagged.yaml:1: not valid YAML"),
    ("check log_interval=0", ["check", "{S}/list.txt", "-o", "train.log_interval=0", "--report", "{O}/r.csv"], 2,
     "train.log_interval is 0"),
    ("check report in missing folder", ["check", "{S}/list.txt", "-o", "model.num_classes=2", "--report",
                                        "{O}/missing/r.csv"], 2, "No such file or directory"),
    ("check report read-only", ["check", "{S}/list.txt", "-o", "model.num_classes=2", "--report", "{RO}/r.csv"], 1,
     "Read-only file system"),
    ("merge latin-1 shard", ["merge-lists", "{S}/vlist.txt", "{S}/latin1.txt", "--output", "{O}/m.txt"], 2,
     "not UTF-8 text"),
    ("merge output is a folder", ["merge-lists", "{S}/videos", "{S}/merged_shard.txt", "--output", "{S}/run"], 2,
     "Is a directory"),
    ("train lr=-1", ["train", "-c", "{S}/cfg.yaml", "-o", "train.lr=-1", "--output", "{O}"], 2,
     "train.lr is -1.0; it must be positive"),
    ("train log_interval=0", ["train", "-c", "{S}/cfg.yaml", "-o", "train.log_interval=0", "--output", "{O}"], 2,
     "train.log_interval is 0; it must be at least 1"),
    ("train epochs=0", ["train", "-c", "{S}/cfg.yaml", "-o", "train.epochs=0", "--output", "{O}"], 2,
     "train.epochs is 0"),
    ("train lr=nan", ["train", "-c", "{S}/cfg.yaml", "-o", "train.lr=.nan", "--output", "{O}"], 2, "train.lr"),
    ("train freeze_stages=7", ["train", "-c", "{S}/cfg.yaml", "-o", "model.freeze_stages=7", "--output", "{O}"], 2,
     "model.freeze_stages is 7"),
    ("train sampler bogus", ["train", "-c", "{S}/cfg.yaml", "-o", "train.sampler=weighted", "--output", "{O}"], 2,
     "train.sampler is 'weighted'"),
    ("train mixup_alpha<0", ["train", "-c", "{S}/cfg.yaml", "-o", "train.mixup_alpha=-1", "--output", "{O}"], 2,
     "train.mixup_alpha is -1.0"),
    ("train unknown weights name", ["train", "-c", "{S}/cfg.yaml", "--init-from", "kinetics-tsn", "--output", "{O}"],
     2, "neither a weights file nor a published name"),
    ("train nproc 0", ["train", "-c", "{S}/cfg.yaml", "--nproc", "0", "--output", "{O}"], 2,
     "--nproc 0: must be at least 1"),
    ("train latin-1 list", ["train", "-c", "{S}/badlist.yaml", "-o", "model.backbone=resnet18", "--output", "{O}"],
     2, "not UTF-8 text"),
    ("train output is a file", ["train", "-c", "{S}/cfg.yaml", "--output", "{S}/afile"], 2, "afile"),
    ("train output in a file", ["train", "-c", "{S}/cfg.yaml", "--output", "{S}/afile/run"], 2, "afile"),
    ("train read-only", ["train", "-c", "{S}/cfg.yaml", "--output", "{RO}/{O}"], 1, "Read-only file system"),
    ("train resume from pickle", ["train", "-c", "{S}/cfg.yaml", "--output", "{O}", "--resume-from",
                                  "{S}/evil.pt"], 2, "refused to load: it holds a Python object of type print"),
    ("train disk full at checkpoint", ["train", "-c", "{S}/cfg.yaml", "-o", "data.root={S}", "--output",
                                       "{SMALL}/{O}"], 1, "cannot write checkpoint (No space left on device)"),
    ("test junk weights", ["test", "-w", "{S}/junk.pt", "--list", "{S}/list.txt"], 2, "junk.pt"),
    ("test pickled weights", ["test", "-w", "{S}/evil.pt", "--list", "{S}/list.txt"], 2, "refused to load"),
    ("test absurd onnx", ["test", "-m", "{S}/absurd.onnx", "--list", "{S}/list.txt"], 1,
     "absurd.onnx: onnxruntime failed"),
    ("test malformed onnx metadata", ["test", "-m", "{S}/badmeta.onnx", "--list", "{S}/list.txt"], 2,
     "metadata tsnctl.num_seg is 'many'"),
    ("test latin-1 list", ["test", "-w", "{S}/model.pt", "--list", "{S}/latin1.txt"], 2, "not UTF-8 text"),
    ("test metrics json in missing folder", ["test", "-w", "{S}/model.pt", "--list", "{S}/list.txt", "--report-dir",
                                             "{O}/rep", "--metrics-json", "{O}/no/m.json"], 2,
     "No such file or directory"),
    ("export into a file's path", ["export", "-w", "{S}/model.pt", "-o", "{S}/afile/m.onnx"], 2, "afile"),
    ("export read-only", ["export", "-w", "{S}/model.pt", "-o", "{RO}/m.onnx"], 1, "Read-only file system"),
    ("export pickled weights", ["export", "-w", "{S}/evil.pt", "-o", "{O}/m.onnx"], 2, "refused to load"),
    ("predict absurd onnx", ["predict", "-m", "{S}/absurd.onnx", "{S}/frames/clip0"], 1, "onnxruntime failed"),
    ("predict malformed metadata", ["predict", "-m", "{S}/badmeta.onnx", "{S}/frames/clip0"], 2, "tsnctl.num_seg"),
    ("predict absurd metadata", ["predict", "-m", "{S}/hugemeta.onnx", "{S}/frames/clip0"], 2,
     "tsnctl.short_side is '1000000000'"),
    ("predict absurd file names", ["predict", "-m", "{S}/widename.onnx", "{S}/frames/clip0"], 2,
     "tsnctl.image_template"),
    ("predict pickled weights", ["predict", "-w", "{S}/evil.pt", "{S}/frames/clip0"], 2, "refused to load"),
    ("predict latin-1 list", ["predict", "-m", "{S}/good.onnx", "{S}/latin1.txt"], 2, "not UTF-8 text"),
    ("predict csv in missing folder", ["predict", "-m", "{S}/good.onnx", "{S}/frames/clip0", "--output",
                                       "{O}/no/p.csv"], 2, "No such file or directory"),
    ("timeline window 0s", ["predict", "-w", "{S}/model.pt", "{S}/videos/walk/clip.mp4", "--timeline", "--window",
                            "0s", "--output", "{O}"], 2, "--window '0s': must be more than 0"),
    ("timeline stride abc", ["predict", "-w", "{S}/model.pt", "{S}/videos/walk/clip.mp4", "--timeline", "--stride",
                             "abc", "--output", "{O}"], 2, "--stride 'abc': expected frames"),
    ("timeline smooth 0", ["predict", "-w", "{S}/model.pt", "{S}/videos/walk/clip.mp4", "--timeline", "--smooth",
                           "0", "--output", "{O}"], 2, "--smooth 0"),
    ("timeline two videos", ["predict", "-w", "{S}/model.pt", "{S}/tree/walk/a.mp4", "{S}/tree/walk/b.mp4",
                             "--timeline", "--output", "{O}"], 2, "exactly one"),
    ("timeline unreadable video", ["predict", "-w", "{S}/model.pt", "{S}/broken.mp4", "--timeline", "--output",
                                   "{O}"], 2, "broken.mp4: not a readable video"),
    ("timeline frame folder", ["predict", "-w", "{S}/model.pt", "{S}/frames/clip0", "--timeline", "--output",
                               "{O}"], 2, "--timeline reads a video file"),
    ("timeline output is a file", ["predict", "-w", "{S}/model.pt", "{S}/videos/walk/clip.mp4", "--timeline",
                                   "--output", "{S}/afile"], 2, "afile: exists and is not a folder"),
    ("timeline read-only", ["predict", "-w", "{S}/model.pt", "{S}/videos/walk/clip.mp4", "--timeline", "--output",
                            "{RO}/{O}"], 1, "Read-only file system"),
    ("features bad shard", ["features", "{S}/vlist.txt", "-w", "{S}/model.pt", "--out", "{O}/f.npy", "--shard",
                            "5/2"], 2, "--shard '5/2'"),
    ("features bad level", ["features", "{S}/vlist.txt", "-w", "{S}/model.pt", "--out", "{O}/f.npy", "--level",
                            "frame"], 2, "--level 'frame'"),
    ("features wrong suffix", ["features", "{S}/vlist.txt", "-w", "{S}/model.pt", "--out", "{O}/f.txt"], 2,
     "f.txt: the features file must end in .npy or .parquet"),
    ("features unreadable video", ["features", "{S}/broken.mp4", "-w", "{S}/model.pt", "--out", "{O}/f.npy"], 1,
     "broken.mp4: not a readable video"),
    ("features read-only", ["features", "{S}/vlist.txt", "-w", "{S}/model.pt", "--out", "{RO}/f.npy"], 1,
     "Read-only file system"),
    ("plot read-only", ["plot", "{S}/run", "-o", "{RO}/c.png"], 1, "Read-only file system"),
    ("plot into a file's path", ["plot", "{S}/run", "-o", "{S}/afile/c.png"], 2, "afile"),
    ("plot a folder without metrics", ["plot", "{S}/frames"], 2, "metrics.csv"),
    ("bench model tagged config", ["bench", "model", "-c", "{S}/tagged.yaml"], 2, "not valid YAML"),
    ("bench data lr=-1", ["bench", "data", "-c", "{S}/cfg.yaml", "-o", "train.lr=-1"], 2, "train.lr"),
    ("split missing folder", ["split", "{S}/nope", "-o", "{O}"], 2, "nope: folder not found"),
    ("split no class folders", ["split", "{S}/run", "-o", "{O}"], 2, "no class folders"),
    ("split empty class", ["split", "{S}/emptyclass", "-o", "{O}"], 2, "walk: class folder holds no clips"),
    ("split val 1", ["split", "{S}/tree", "--val", "1", "-o", "{O}"], 2, "--val is 1.0"),
    ("split val 0", ["split", "{S}/tree", "--val", "0", "-o", "{O}"], 2, "--val is 0.0"),
    ("split bad regex", ["split", "{S}/tree", "--group-by", "(g", "-o", "{O}"], 2, "not a valid regular expression"),
    ("split regex matches nothing", ["split", "{S}/tree", "--group-by", "zz", "-o", "{O}"], 2, "matches no clip"),
    ("split regex misses a clip", ["split", "{S}/tree", "--group-by", "[ab]", "-o", "{O}"], 2,
     "c.mp4: --group-by '[ab]' does not match"),
    ("split double space", ["split", "{S}/spaced", "-o", "{O}"], 2, "a  b.mp4: clip name has a tab"),
    ("split symlinked clip", ["split", "{S}/linked", "-o", "{O}"], 2, "a.mp4: symbolic link"),
    ("split existing output", ["split", "{S}/tree"], 2, "labels.txt: output is an existing file"),
    ("split out is a file", ["split", "{S}/tree", "-o", "{S}/afile"], 2, "afile: output folder is a file"),
    ("split read-only", ["split", "{S}/tree", "-o", "{RO}/{O}"], 1, "Read-only file system"),
    ("convert pickled weights", ["convert-weights", "{S}/evil.pt", "-o", "{O}/w.pt"], 2, "refused to load"),
    ("convert into a file's path", ["convert-weights", "{S}/model.pt", "-o", "{S}/afile/w.pt"], 2, "afile"),
    ("convert read-only", ["convert-weights", "{S}/model.pt", "-o", "{RO}/w.pt"], 1, "Read-only file system"),
    ("convert disk full", ["convert-weights", "{S}/model.pt", "-o", "{SMALL}/{O}.pt"], 1,
     "cannot write checkpoint (No space left on device)"),
]


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` except under ``skip``: (size, mtime)."""
    found = {}
    for path in folder.rglob("*"):
        if path == skip or skip in path.parents or not path.is_file():
            continue
        stat = path.stat()
        found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return found


def prepare(sandbox, row_id: str, args: list[str]) -> tuple[Path, Path, list[str]]:
    """The sandbox, this row's output path and its arguments with the placeholders filled in."""
    s, mounts = sandbox
    for mount in ("RO", "FULL", "SMALL"):
        if any(f"{{{mount}}}" in a for a in args) and not mounts[mount]:
            pytest.skip(f"needs a {mount} tmpfs mount (root)")
    name = "out_" + "".join(c if c.isalnum() else "_" for c in row_id)
    out = s / name
    for mount in ("RO", "FULL", "SMALL"):
        if any(f"{{{mount}}}/{{O}}" in a for a in args):
            out = s / mount.lower() / name
    args = [a.replace("{RO}/{O}", str(out)).replace("{FULL}/{O}", str(out)).replace("{SMALL}/{O}", str(out))
            .replace("{O}", str(out)).replace("{S}", str(s)).replace("{RO}", str(s / "ro")) for a in args]
    return s, out, args


@pytest.mark.parametrize(("row_id", "args", "code", "fragment"), ROWS, ids=[r[0] for r in ROWS])
def test_hostile_input_is_one_line_and_leaves_nothing(sandbox, row_id, args, code, fragment, capfd, monkeypatch):
    s, out, args = prepare(sandbox, row_id, args)
    monkeypatch.chdir(s)  # a default output (./<list>_check.csv, runs/...) would show in the snapshot
    before = snapshot(s, out)
    capfd.readouterr()
    result = runner.invoke(app, ["-q", *args])  # -q: no progress or info lines, so stderr is errors only
    native = capfd.readouterr().err  # onnxruntime / FFmpeg writing to fd 2 directly
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in (result.stderr + native).splitlines() if line.strip()]
    assert result.exit_code == code, (result.exit_code, lines, result.stdout)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and "unexpected" not in lines[0]
    assert snapshot(s, out) == before, "wrote outside the output folder"
    leftovers = [p for p in (out.rglob("*") if out.is_dir() else []) if p.name.endswith((".tmp", ".part"))]
    assert not leftovers and not list(out.parent.glob(out.name + "*.tmp")), leftovers


SUBPROCESS_ROWS = ["check latin-1 list", "predict absurd onnx"]


@pytest.mark.parametrize("row_id", SUBPROCESS_ROWS)
def test_hostile_input_in_a_real_process(sandbox, row_id):
    """The same rows through the real entry point: what the interpreter itself prints on stderr counts too."""
    _, args, code, fragment = next(r for r in ROWS if r[0] == row_id)
    s, out, args = prepare(sandbox, row_id, args)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", "from tsnctl.cli import main; main()", "-q", *args], cwd=s, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code and len(lines) == 1, (proc.returncode, proc.stderr)
    assert lines[0].startswith("error: ") and fragment in lines[0] and "Traceback" not in proc.stderr


def test_a_failed_checkpoint_write_leaves_no_tmp_and_names_the_file(tmp_path, monkeypatch):
    """Without root (no tmpfs): the write itself fails with ENOSPC, as on a full disk."""
    import errno

    from tsnctl.errors import UserError

    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr("builtins.open", lambda *a, **k: FullDisk(real_open(*a, **k)))
    with pytest.raises(UserError, match=r"last.pt: cannot write checkpoint \(No space left on device\)"):
        save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.zeros(10_000)}})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_check_flags_duplicates_spelled_differently(tmp_path):
    from tsnctl.prepare.check import check_list

    write_frames(tmp_path / "sub" / "a", 3)
    (tmp_path / "list.txt").write_text(f"sub/a 3 0\n./sub/a 3 0\nsub/../sub/a 3 0\n{tmp_path}/sub/a 3 0\n")
    report = check_list(tmp_path / "list.txt", "frames", num_classes=1, num_seg=1)
    assert [row.status for row in report.rows] == ["ok", "duplicate", "duplicate", "duplicate"]
    assert all("repeats line 1" in row.reason for row in report.rows[1:])


@pytest.mark.slow
def test_resumed_run_has_no_duplicate_step_rows(tmp_path):
    """Resuming from an earlier checkpoint runs epoch 2 again: its steps.csv rows must not appear twice."""
    import csv

    for i in range(2):
        write_frames(tmp_path / "frames" / f"clip{i}", 4, seed=i)
    (tmp_path / "list.txt").write_text("frames/clip0 4 0\nframes/clip1 4 1\n")
    cfg = tiny_config()
    cfg.train.batch_size, cfg.train.epochs, cfg.train.log_interval, cfg.train.save_interval = 1, 2, 1, 1
    cfg.train.checkpoint_steps = 0
    cfg.data.train_list = str(tmp_path / "list.txt")
    save_config(cfg, tmp_path / "cfg.yaml")
    run = tmp_path / "run"
    args = ["-q", "train", "-c", str(tmp_path / "cfg.yaml"), "--output", str(run)]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, [*args, "--resume-from", str(run / "epoch_1.pt")])
    assert result.exit_code == 0, result.output
    with open(run / "steps.csv", newline="") as f:
        keys = [(row["epoch"], row["step"]) for row in csv.DictReader(f)]
    assert keys == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
