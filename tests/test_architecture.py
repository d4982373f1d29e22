"""The house keeps its shape: layer contracts (import-linter), no import cycle, small modules and functions."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "tsnctl").rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def lint_imports(config: Path) -> subprocess.CompletedProcess:
    """import-linter on ``config``, in its own process (it reconfigures logging, which would mute tsnctl's)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code, str(config)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_layer_contracts_of_pyproject_hold():
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_layer_contract_fails_the_check(tmp_path):
    config = tmp_path / "contracts.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "tsnctl"

        [[tool.importlinter.contracts]]
        name = "upside down: data above the CLI"
        type = "layers"
        containers = ["tsnctl"]
        layers = ["data", "cli"]
    """))
    result = lint_imports(config)
    assert result.returncode == 1 and "BROKEN" in result.stdout, result.stdout + result.stderr


def import_cycles(package: str) -> list[list[str]]:
    """Strongly connected groups of modules in ``package``'s import graph (function-level imports included)."""
    graph = grimp.build_graph(package)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm; the graph has ~70 nodes, recursion is fine
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in edges.get(module, []):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in edges.get(module, []):
                cycles.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle_even_through_imports_inside_functions():
    assert import_cycles("tsnctl") == []


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path, monkeypatch):
    package = tmp_path / "cyclic_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic_pkg import b\n")
    (package / "b.py").write_text("def late():\n    from cyclic_pkg.a import b\n    return b\n")
    (package / "c.py").write_text("from cyclic_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclic_pkg") == [["cyclic_pkg.a", "cyclic_pkg.b"]]


def oversized(path: Path) -> list[str]:
    """Why ``path`` breaks the size rules of docs/style.md (empty when it keeps them)."""
    text = path.read_text()
    problems = []
    if len(text.splitlines()) > MAX_MODULE_LINES:
        problems.append(f"{path}: {len(text.splitlines())} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                problems.append(f"{path}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    return problems


def test_no_module_over_400_lines_and_no_function_over_60():
    problems = [problem for path in SOURCES for problem in oversized(path)]
    assert not problems, "\n".join(problems)


def test_the_size_check_catches_a_long_function(tmp_path):
    source = tmp_path / "long.py"
    source.write_text("def long():\n" + "    x = 1\n" * 60 + "\n\ndef short():\n    return 1\n")
    assert oversized(source) == [f"{source}:1 long: 61 lines (at most 60)"]


def test_import_tsnctl_is_cheap_and_gives_the_whole_api():
    code = "import sys, tsnctl; print(sorted(m for m in ('torch', 'typer', 'cv2') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    loaded = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"  # names load their modules on first use
    import tsnctl

    for name in tsnctl.__all__:
        assert getattr(tsnctl, name) is not None, name
    export, load_model = tsnctl.export, tsnctl.load_model
    assert export.__name__ == "to_onnx" and load_model.__module__ == "tsnctl.workflow"
    with pytest.raises(AttributeError):
        tsnctl.no_such_name  # noqa: B018


def test_the_python_api_example_needs_one_import():
    tree = ast.parse((ROOT / "examples" / "python_api.py").read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    ours = [ast.unparse(node) for node in imports
            if (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name or "").startswith("tsnctl")]
    assert ours == ["import tsnctl"]


def test_a_config_becomes_clip_settings_in_one_place():
    builders = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in SOURCES
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "ClipSettings"
                and "cfg." in ast.unparse(node)]
    assert builders and all(b.startswith("tsnctl/data/splits.py:") for b in builders), builders


def test_clip_settings_of_each_split():
    from tsnctl.config import load_config
    from tsnctl.data.splits import clip_settings

    cfg = load_config(None, ["train.num_seg=3", "valid.num_seg=4", "test.num_seg=5", "test.crop=three",
                             "train.seed=7", "data.jpeg_dct_scale=true"])
    train, valid, test = (clip_settings(cfg, split) for split in ("train", "valid", "test"))
    assert (train.mode, train.num_seg, train.seed, train.views) == ("train", 3, 7, 3)
    assert (valid.mode, valid.crop, valid.views) == ("test", "center", 4)
    assert (test.mode, test.crop, test.views, test.fmt) == ("test", "three", 15, cfg.data.format)
    assert all(s.jpeg_dct_scale for s in (train, valid, test))
    assert clip_settings(cfg, "test", "video").fmt == "video"
    with pytest.raises(ValueError, match="unknown split"):
        clip_settings(cfg, "val")
