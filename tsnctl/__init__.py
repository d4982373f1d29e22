"""tsnctl: Temporal Segment Networks for video action recognition.

The Python API is one import; each name loads its module on first use, so ``import tsnctl`` stays cheap
(the CLI's start-up time counts for ``tsnctl predict``)::

    import tsnctl

    demo = tsnctl.make_demo_data("work/data")
    tsnctl.extract_frames(demo.train_list, "work/frames")
    cfg = tsnctl.load_config("configs/demo.yaml", ["train.epochs=1"])
    tsnctl.train(cfg, "work/run", validate=True)
    model = tsnctl.load_model("work/run/best.pt")
    run = tsnctl.test(model, cfg, report_dir="work/run/test")       # run.result.top1, run.report
    tsnctl.export(model, "work/run/model.onnx")
    tsnctl.predict(model, ["clip.mp4"], topk=3)
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)

__version__ = "0.1.0"

# name -> (module, attribute): the names a Python user needs, from the lifecycle's modules.
_API = {
    "Config": ("tsnctl.config", "Config"),
    "load_config": ("tsnctl.config", "load_config"),
    "UserError": ("tsnctl.errors", "UserError"),
    "make_demo_data": ("tsnctl.demo.data", "make_demo_data"),
    "extract_frames": ("tsnctl.prepare.extract", "extract_frames"),
    "train": ("tsnctl.engine.train", "train"),
    "load_model": ("tsnctl.workflow", "load_model"),
    "test": ("tsnctl.workflow", "test"),
    "export": ("tsnctl.deploy.export", "to_onnx"),
    "predict": ("tsnctl.workflow", "predict"),
    "plot_runs": ("tsnctl.engine.plots", "plot_runs"),
}

__all__ = ["Config", "UserError", "__version__", "export", "extract_frames", "load_config", "load_model",
           "make_demo_data", "plot_runs", "predict", "test", "train"]

if TYPE_CHECKING:  # for editors and type checkers; at run time __getattr__ imports on first use
    from tsnctl.config import Config, load_config
    from tsnctl.demo.data import make_demo_data
    from tsnctl.deploy.export import to_onnx as export
    from tsnctl.engine.plots import plot_runs
    from tsnctl.engine.train import train
    from tsnctl.errors import UserError
    from tsnctl.prepare.extract import extract_frames
    from tsnctl.workflow import load_model, predict, test


def __getattr__(name: str) -> object:
    if name not in _API:
        raise AttributeError(f"module 'tsnctl' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
