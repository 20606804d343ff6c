"""The control modules' import graph: no cycles, and the method table readable without torch."""

import ast
import subprocess
import sys
from pathlib import Path

import aihf.control

PACKAGE = Path(aihf.control.__file__).parent


def _runtime_imports(path: Path) -> set[str]:
    """aihf.control modules that `path` imports when it is imported: module-level statements, `if
    TYPE_CHECKING:` skipped (an import inside a function runs later, once every module is loaded)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("aihf.control."):
                found.add(child.module.removeprefix("aihf.control."))
            elif isinstance(child, ast.Import):
                found.update(
                    a.name.removeprefix("aihf.control.")
                    for a in child.names
                    if a.name.startswith("aihf.control.")
                )
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_control_modules_import_each_other_without_cycles():
    graph = {p.stem: _runtime_imports(p) for p in PACKAGE.glob("*.py")}
    # the methods see a `Run`, not the trainer: not even their annotations name train.py
    assert "aihf.control.train" not in (PACKAGE / "algorithms.py").read_text()
    state: dict[str, str] = {}

    def walk(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join([*path, module])}"
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            walk(dep, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        walk(module, [])


def test_each_module_imports_alone_and_the_table_needs_no_torch():
    code = (
        "import sys, importlib\n"
        "import aihf.control.config, aihf.control.algorithms\n"
        "assert 'torch' not in sys.modules, 'torch loaded by the config or the method table'\n"
        "for name in ('algorithms', 'train', 'reward_learning'):\n"
        "    importlib.import_module('aihf.control.' + name)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
