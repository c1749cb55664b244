"""The shape of the code a newcomer changes: no import cycle and no import hidden in a
function to dodge one, an agent SDK that loads only what signing and gRPC need, modules of one
job (none over 600 lines), and no two modules with the same name (nor one named like a module
of the standard library)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "broker"
GENERATED = PACKAGE / "v1"
MAX_LINES = 600


def modules() -> dict[str, Path]:
    """Every hand-written module of the broker package, by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if GENERATED in path.parents:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # running it is the command line, not an import
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(tree: ast.Module, name: str, known: dict[str, Path]) -> set[str]:
    """The broker modules a module's top level imports (and the packages that loads)."""
    targets: set[str] = set()
    package = name if known[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in known else base)
    loaded = set()
    for target in targets:
        parts = target.split(".")
        loaded.update(".".join(parts[:n]) for n in range(2, len(parts) + 1))
    # the packages above this module are already loading when it runs: not an edge
    ancestors = {".".join(name.split(".")[:n]) for n in range(1, name.count(".") + 1)}
    return {t for t in loaded if t in known and t != name and t not in ancestors}


def test_no_import_cycle_between_broker_modules() -> None:
    known = modules()
    graph = {
        name: imported(ast.parse(path.read_text()), name, known) for name, path in known.items()
    }
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_inside_a_function_or_behind_type_checking() -> None:
    hidden = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        hidden.append(f"{name}:{inner.lineno} (in {node.name})")
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                hidden.append(f"{name}:{node.lineno} (behind TYPE_CHECKING)")
    assert hidden == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_module_imports_alone_in_any_order(seed: int) -> None:
    names = sorted(modules())
    script = (
        "import importlib, random, sys\n"
        f"names = {names!r}\n"
        f"random.Random({seed}).shuffle(names)\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_agent_sdk_loads_no_server_module() -> None:
    script = (
        "import sys\n"
        "import broker.client\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('broker'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    server_side = ("broker.storage", "broker.policy", "broker.untrusted", "broker.approvals")
    assert [m for m in loaded if m.startswith(server_side)] == []
    assert {"sqlite3", "jsonschema", "yaml"} & set(_loaded_top_level(script)) == set()
    assert loaded <= {
        "broker",
        "broker.client",
        "broker.errors",
        "broker.jsonexact",
        "broker.signing",
        "broker.v1",
        "broker.v1.broker_pb2",
    }


def test_no_module_is_over_600_lines() -> None:
    long = {
        name: lines
        for name, path in modules().items()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_two_modules_share_a_name_and_none_shadows_the_standard_library() -> None:
    seen: dict[str, list[str]] = {}
    for name in modules():
        short = name.rsplit(".", 1)[-1]
        if name != "broker":
            seen.setdefault(short, []).append(name)
    shared = {short: names for short, names in seen.items() if len(names) > 1}
    assert shared == {}
    assert sorted(set(seen) & sys.stdlib_module_names) == []


def _loaded_top_level(script: str) -> list[str]:
    probe = script.replace(
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('broker'))))",
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))",
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return result.stdout.split()


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the graph, as the modules along it, or None (iterative depth-first)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                stack.append(iter(sorted(graph[step])))
    return None
