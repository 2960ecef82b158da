"""The package's layout rules, read statically from the source (nothing is imported or run).

Imports counted: every ``import`` and ``from ... import`` statement anywhere in a module, at module
level AND inside functions or methods. A deferred (function-level) import is still a dependency of
the module that makes it, and a circle through one is still two layers that each need the other
(the circle this test was written for, suites -> commands.bench, was a function-level import).
An edge goes to the module named; ``from pkg import name`` goes to ``pkg.name`` when that is a
module of the package, else to ``pkg``. Parent packages that Python initialises along the way are
not edges (a package's ``__init__`` only hands names on).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pefthub"
#: The CLI layer and the only module above it: nothing else in pefthub/ may import pefthub.commands.
CLI_LAYER = ("pefthub.commands", "pefthub.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The pefthub modules that ``path`` (module ``name``) imports, module- and function-level."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import pefthub.x.y as z` of a name in pefthub.x
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_module_and_function_level_imports():
    graph = import_graph()
    assert "pefthub.results" in graph["pefthub.suites"]  # module level
    assert "pefthub.planning" in graph["pefthub.suites"]  # inside resolve()
    assert "pefthub.commands.bench_command" in graph["pefthub.commands.plan_command"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pefthub_has_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles in pefthub/: " + "; ".join(" <-> ".join(c) for c in found)


def test_nothing_below_the_cli_imports_it():
    def in_cli(module: str) -> bool:
        return any(module == top or module.startswith(top + ".") for top in CLI_LAYER)

    offenders = sorted(f"{module} imports {target}" for module, targets in import_graph().items()
                       if not in_cli(module) for target in targets if target.startswith("pefthub.commands"))
    assert not offenders, offenders


# ---- no absolute paths outside the repository -----------------------------------------------
#: Absolute filesystem paths of one machine: a home, a scratch or work directory, a Windows drive.
MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/home/|/tmp/|/Users/|/root/|/mnt/|[A-Za-z]:\\\\|[A-Za-z]:\\(?=\w))")
#: Documented exceptions: kernel interfaces read at run time, not a place on someone's disk.
ALLOWED = ("/proc/self/",)


def test_code_names_no_absolute_path_outside_the_repository():
    hits = []
    for top in ("pefthub", "plugins"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if MACHINE_PATH.search(line) and not any(a in line for a in ALLOWED):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_path_scan_catches_what_it_is_for():
    for bad in ('NOTES = "/work/shared/notes.md"', "# see /home/me/x.md", "p = 'C:\\\\Users\\\\x'",
                "open('/tmp/out.json')", "# /Users/me/notes"):
        assert MACHINE_PATH.search(bad), bad
    for fine in ('"leaderboards/quick/results"', "a/b/tmp/c", "https://example.org/home/x", "ratio 3:1"):
        assert not MACHINE_PATH.search(fine), fine


def test_the_architecture_page_names_only_paths_that_exist():
    """docs/architecture.md stays true for the tree as it is; planned moves are in their own section."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    current = text.split("## Moves that are planned")[0]
    paths = set(re.findall(r"`((?:pefthub|plugins|benchmarks|leaderboards|tests|docs)/[\w./-]*)`", current))
    assert "pefthub/schema.py" in paths and "pefthub/commands/" in paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing


def test_no_two_modules_of_different_layers_share_a_name():
    """A name says what a module is: ``report/findings.py`` and a CLI ``commands/findings.py`` read as one
    thing in two places, so CLI modules carry ``_command``; no other pair of modules or packages in
    different directories shares a stem either (``__init__``/``__main__`` and a package's ``base`` aside)."""
    from collections import defaultdict

    root = Path(__file__).resolve().parents[1] / "pefthub"
    where = defaultdict(set)
    for path in root.rglob("*.py"):
        if path.stem not in ("__init__", "__main__", "base") and "__pycache__" not in path.parts:
            where[path.stem].add(str(path.parent.relative_to(root)))
    for path in root.rglob("__init__.py"):
        if path.parent != root:
            where[path.parent.name].add(str(path.parent.parent.relative_to(root)) + " (package)")
    shared = {name: sorted(dirs) for name, dirs in where.items() if len(dirs) > 1}
    assert not shared, f"same-name modules in different layers: {shared}"
