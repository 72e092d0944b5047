"""The layout of biva_core: one folder per idea, in layers that import only downward, and no
import circle, counting the imports inside functions too.

    model (0)  <  data (1)  <  io (2)  <  train, detect (3)  <  eval (4)  <  the entry points (5)

The command lines (evaluate, export, train's CLI) sit on top: no module of the package imports
one but its own `python -m` entry point, so what two of them share lives in a lower layer (the
images a model reads, biva_core.data.inputs, serve evaluate and export alike).
"""
from __future__ import annotations

import ast
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "biva_core"
# benchmarks/: speed and behaviour measurements; experiments/: the science (figures, tables, choices)
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "experiments").glob("*.py"))
LAYERS = {"model": 0, "data": 1, "io": 2, "train": 3, "detect": 3, "eval": 4}
ENTRY = 5  # biva_core/__init__.py, evaluate.py, export.py: the public names and `python -m` entries
COMMANDS = {"biva_core.eval.evaluate": "biva_core.evaluate", "biva_core.eval.export": "biva_core.export",
            "biva_core.train.cli": None}  # a command-line module -> the entry point that may import it


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], ENTRY) if len(parts) > 1 else ENTRY


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every biva_core import in the file, wherever it stands; relative imports
    are reported as such (the package uses absolute ones)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "." * node.level + (node.module or "")))
            elif node.module and node.module.split(".")[0] == "biva_core":
                base = node.module
                # `from biva_core.model import bounds` imports the submodule biva_core.model.bounds
                for alias in node.names:
                    sub = PACKAGE.parent / (base.replace(".", "/") + "/" + alias.name)
                    found.append((node.lineno, f"{base}.{alias.name}" if sub.with_suffix(".py").is_file()
                                  or sub.is_dir() else base))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "biva_core"]
    return found


def graph() -> dict[str, set[str]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        out[module_of(path)] = {m for _, m in imports_of(path)}
    return out


def test_every_package_folder_imports_only_downward():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_of(path)
        for line, target in imports_of(path):
            if target.startswith("."):
                bad.append(f"{path.relative_to(PACKAGE)}:{line} relative import {target}")
            elif layer_of(target) > layer_of(me) or (layer_of(target) == layer_of(me) == 3
                                                    and target.split(".")[1] != me.split(".")[1]):
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {target} (layer {layer_of(target)} "
                           f"above {layer_of(me)})")
    assert not bad, "\n".join(bad)


def test_no_module_imports_itself_back():
    g = graph()
    # a module's imports resolved to modules (a package import counts as its __init__)
    resolve = lambda m: m if m in g else None  # noqa: E731
    cycles = []
    for start in g:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in filter(None, map(resolve, g.get(node, ()))):
                if nxt == start:
                    cycles.append(" -> ".join(trail + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    assert not cycles, "\n".join(sorted(set(cycles)))


def test_no_module_imports_a_command_line_module():
    """export reads its images through biva_core.data.inputs, not from the evaluate CLI; only
    `python -m biva_core.evaluate` / `biva_core.export` import their command's module."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_of(path)
        for line, target in imports_of(path):
            if target in COMMANDS and target != me and COMMANDS[target] != me:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports the command-line module {target}")
    assert not bad, "\n".join(bad)
    assert "biva_core.eval.evaluate" not in graph()["biva_core.eval.export"]


# imports kept inside a function, each for a reason: the studio's command points GRADIO_TEMP_DIR
# into its own folder before Gradio is imported (Gradio reads it once, at import), and answers a
# bad argument before it imports torch
LAZY = {"studio/__main__.py"}


def test_every_module_imports_at_its_top():
    """A reader sees what a module depends on in its first lines: no import inside a function or
    method of biva_core or studio (but LAZY's)."""
    bad = []
    for path in sorted(list(PACKAGE.rglob("*.py")) + list((ROOT / "studio").rglob("*.py"))):
        name = str(path.relative_to(ROOT))
        if name in LAZY:
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bad += [f"{name}:{n.lineno} in {fn.name}()" for n in ast.walk(fn)
                        if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not bad, "imports inside functions:\n" + "\n".join(bad)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_script_imports_the_package_as_installed_and_answers_help(script, monkeypatch, capsys):
    """No sys.path or PYTHONPATH edits and nothing imported from the checkout but the installed
    packages (biva_core, studio): not tests/conftest, not another script. `--help` answers."""
    tree = ast.parse(script.read_text())
    local = ({p.stem for p in ROOT.glob("*.py")} | {p.stem for p in (ROOT / "tests").glob("*.py")}
             | {d.name for d in ROOT.iterdir() if d.is_dir()}) - {"biva_core", "studio"}
    bad = [f"line {n.lineno}: sys.path" for n in ast.walk(tree)
           if isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name) and n.value.id == "sys"]
    bad += [f"line {n.lineno}: PYTHONPATH" for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "PYTHONPATH"]
    bad += [f"line {n.lineno}: imports {m}" for n in ast.walk(tree) for m in
            ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""] if isinstance(n, ast.ImportFrom) else [])
            if m.split(".")[0] in local]
    assert not bad, f"{script.relative_to(ROOT)}: " + "; ".join(bad)
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code in (0, None) and "usage" in capsys.readouterr().out


def test_a_script_runs_from_the_repo_root_with_the_package_installed(tmp_path):
    """`python benchmarks/x.py` puts benchmarks/ on the path, not the checkout: biva_core comes from
    the installed package (pip install -e .)."""
    installed = subprocess.run([sys.executable, "-c", "import biva_core"], cwd=tmp_path, capture_output=True)
    assert installed.returncode == 0, "biva_core is not installed: the README's test command runs pip install -e . first"
    for script in ("benchmarks/dmol_layout.py", "experiments/ssl_variants.py"):
        r = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "usage" in r.stdout, r.stderr
