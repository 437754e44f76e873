"""The import rules of docs/architecture.md, checked by walking the AST of every runtime module.

Every import counts: at module level, inside functions and methods, under `if TYPE_CHECKING:`,
and `importlib.import_module("literal")` calls. Relative imports are resolved against the
importing module's package. Decisions:

- `TYPE_CHECKING` imports count for the layer rules *and* for cycles. They never run, but a
  module that names another's types in its signatures depends on it all the same; a type-only
  cycle is the same fold a function-level import hides, one step removed. (This is also the
  default of grimp / import-linter.) Flip `TYPE_CHECKING_COUNTS_FOR_CYCLES` to relax it.
- Training code (`moderation/training/`, `generator/training/`) is not runtime: nothing the
  service runs imports it, so it is exempt from the 500-line rule. It still ships in the
  packages, so every import rule applies to it (moderation's training never imports the
  generator either).
- A cycle is looked for between the modules of one top-level package; imports between packages
  are held by the layer table instead (which allows no pair of packages to import each other).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RUNTIME_PACKAGES = ("credence", "provenance", "detector", "moderation", "generator", "migrations", "policies")
DOMAIN_PACKAGES = ("provenance", "detector", "moderation", "generator", "migrations", "policies")
FIRST_PARTY = (*RUNTIME_PACKAGES, "bench", "tests")

# Which first-party packages each installed package may import (docs/architecture.md, the package table).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "credence": frozenset(RUNTIME_PACKAGES),
    "detector": frozenset({"detector", "provenance"}),
    "provenance": frozenset({"provenance"}),
    "moderation": frozenset({"moderation"}),
    "generator": frozenset({"generator"}),
    "migrations": frozenset({"migrations", "provenance"}),
    "policies": frozenset({"policies"}),
}

MAX_RUNTIME_LINES = 500
NON_RUNTIME_DIRS = ("moderation/training", "generator/training")
TYPE_CHECKING_COUNTS_FOR_CYCLES = True


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, where, and in which context."""

    importer: str
    target: str
    path: Path
    line: int
    kind: str  # "module", "function" or "type_checking"

    def where(self, root: Path) -> str:
        """`path:line (kind)` relative to `root`, for failure messages."""
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line} ({self.kind})"


@dataclass
class ImportGraph:
    """The modules found under some packages and every import between first-party modules."""

    root: Path
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)

    def edges(self, *, type_checking: bool = True) -> dict[str, dict[str, Import]]:
        """importer -> imported module -> the first import that makes the edge (known modules only)."""
        graph: dict[str, dict[str, Import]] = {name: {} for name in self.modules}
        for imp in self.imports:
            if imp.target not in self.modules or imp.target == imp.importer:
                continue
            if imp.kind == "type_checking" and not type_checking:
                continue
            graph[imp.importer].setdefault(imp.target, imp)
        return graph


def module_name(root: Path, path: Path) -> str:
    """`pkg/sub/mod.py` -> `pkg.sub.mod`; `pkg/sub/__init__.py` -> `pkg.sub`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(root: Path, package: str) -> Iterator[Path]:
    """Every .py file under `root/package`, caches excluded."""
    base = root / package
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name of `from <level dots><module> import ...` written in `importer`."""
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    if not parts:
        raise ValueError(f"relative import beyond the top-level package in {importer}")
    return ".".join(parts + ([module] if module else []))


def _walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.AST, str]]:
    """Every node under `node`, with the context it runs in (module, function, type_checking)."""
    for child in ast.iter_child_nodes(node):
        child_kind = kind
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and kind == "module":
            child_kind = "function"
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            yield child, kind
            for stmt in child.body:
                yield stmt, "type_checking"
                yield from _walk(stmt, "type_checking")
            for stmt in child.orelse:
                yield stmt, kind
                yield from _walk(stmt, kind)
            continue
        yield child, child_kind
        yield from _walk(child, child_kind)


def imports_of(root: Path, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    """The first-party imports written in one file, resolved to absolute module names."""
    importer = module_name(root, path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def make(target: str, node: ast.AST, kind: str) -> Import | None:
        if target.split(".")[0] not in FIRST_PARTY:
            return None
        return Import(importer, target, path, getattr(node, "lineno", 0), kind)

    for node, kind in _walk(tree, "module"):
        found: list[Import | None] = []
        if isinstance(node, ast.Import):
            found = [make(alias.name, node, kind) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(importer, is_package, node.level, node.module) if node.level else node.module
            assert base is not None
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from pkg import mod` imports the module pkg.mod; `from pkg import name` imports pkg.
                found.append(make(submodule if submodule in known else base, node, kind))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in {"import_module", "__import__"})
            )
        ):
            found = [make(node.args[0].value, node, kind)]
        yield from dict.fromkeys(imp for imp in found if imp is not None)  # `from m import a, b`: one import


def scan(root: Path, packages: Iterable[str]) -> ImportGraph:
    """The import graph of every module under `root/<package>` for each package."""
    graph = ImportGraph(root)
    for package in packages:
        for path in python_files(root, package):
            graph.modules[module_name(root, path)] = path
    for path in graph.modules.values():
        graph.imports.extend(imports_of(root, path, graph.modules))
    return graph


def strongly_connected(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def cycle_path(graph: dict[str, dict[str, Import]], component: list[str]) -> list[tuple[str, str, Import]]:
    """One concrete cycle through the component's first node, the shortest way back: (from, to, import) steps."""
    members = set(component)
    start = component[0]
    came_from: dict[str, tuple[str, Import]] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child, imp in sorted(graph[node].items()):
                if child not in members or child in came_from:
                    continue
                came_from[child] = (node, imp)
                if child == start:
                    steps = [(node, child, imp)]
                    while steps[0][0] != start:
                        parent, parent_imp = came_from[steps[0][0]]
                        steps.insert(0, (parent, steps[0][0], parent_imp))
                    return steps
                following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")


def cycles(graph: ImportGraph, package: str, *, type_checking: bool = TYPE_CHECKING_COUNTS_FOR_CYCLES) -> list[str]:
    """Each import cycle among `package`'s modules, written `a -> b (file:line) -> ... -> a`."""
    edges = graph.edges(type_checking=type_checking)
    own = {
        name: {t: imp for t, imp in targets.items() if t.split(".")[0] == package}
        for name, targets in edges.items()
        if name.split(".")[0] == package
    }
    found = []
    for component in strongly_connected(own):
        steps = cycle_path(own, component)
        text = component[0] + "".join(f" -> {b} [{imp.where(graph.root)}]" for _, b, imp in steps)
        found.append(f"{len(component)} modules in a cycle ({', '.join(component)}): {text}")
    found.extend(room_cycles(graph, own))
    return found


def _room(package: str, module: str) -> str:
    """The child of `package` that holds `module` (the package's own `__init__` is a room too)."""
    if module == package:
        return package + ".__init__"
    return package + "." + module[len(package) + 1 :].split(".")[0]


def room_cycles(graph: ImportGraph, own: dict[str, dict[str, Import]]) -> list[str]:
    """Cycles between the rooms of one package: its modules and subpackages, each taken whole.

    `a.py` importing `pkg/sub/x.py` while `pkg/sub/y.py` imports `a.py` is no module cycle, but the
    two rooms fold over each other (the fingerprint index was split this way). A component of
    plain modules only is a module cycle, already reported, so only components holding a
    subpackage are reported here.
    """
    packages = sorted(name for name in own if graph.modules[name].name == "__init__.py")
    found = []
    for package in packages:
        members = [m for m in own if m == package or m.startswith(package + ".")]
        rooms: dict[str, dict[str, Import]] = {_room(package, m): {} for m in members}
        for importer in members:
            for target, imp in own[importer].items():
                if target == package or target.startswith(package + "."):
                    a, b = _room(package, importer), _room(package, target)
                    if a != b:
                        rooms[a].setdefault(b, imp)
        for component in strongly_connected(rooms):
            if not any(room in graph.modules and graph.modules[room].name == "__init__.py" for room in component):
                continue
            steps = cycle_path(rooms, component)
            text = component[0] + "".join(
                f" -> {b} (via {imp.importer} -> {imp.target} [{imp.where(graph.root)}])" for _, b, imp in steps
            )
            found.append(f"{len(component)} rooms of {package} in a cycle ({', '.join(component)}): {text}")
    return found


def layer_violations(graph: ImportGraph, may_import: dict[str, frozenset[str]]) -> list[str]:
    """Imports of a first-party package that the importer's package may not import."""
    bad = []
    for imp in graph.imports:
        importer_top, target_top = imp.importer.split(".")[0], imp.target.split(".")[0]
        allowed = may_import.get(importer_top)
        if allowed is not None and target_top not in allowed:
            bad.append(f"{imp.importer} imports {imp.target} [{imp.where(graph.root)}]")
    return bad


@pytest.fixture(scope="module")
def runtime_graph() -> ImportGraph:
    """The import graph of the installed packages, bench/ and tests/ (scanned once)."""
    return scan(ROOT, FIRST_PARTY)


def test_the_scan_sees_the_code(runtime_graph: ImportGraph) -> None:
    """The rules below cannot pass vacuously: the scan finds the packages and imports of all kinds."""
    for package in RUNTIME_PACKAGES:
        assert any(name.split(".")[0] == package for name in runtime_graph.modules), package
    assert len(runtime_graph.modules) > 100
    kinds = {imp.kind for imp in runtime_graph.imports}
    assert {"module", "function"} <= kinds
    assert any(
        imp.importer.startswith("credence") and imp.target.startswith("provenance") for imp in runtime_graph.imports
    )
    assert any(
        imp.importer.startswith("detector") and imp.target.startswith("provenance") for imp in runtime_graph.imports
    )


@pytest.mark.parametrize("package", RUNTIME_PACKAGES)
def test_no_import_cycle_inside_a_package(runtime_graph: ImportGraph, package: str) -> None:
    """No two modules of one package import each other, however indirectly or lazily."""
    found = cycles(runtime_graph, package)
    assert not found, f"import cycles in {package}/:\n" + "\n".join(found)


def test_packages_import_only_what_the_layer_table_allows(runtime_graph: ImportGraph) -> None:
    """No domain package imports credence/; moderation never imports generator/; detector only provenance/."""
    bad = layer_violations(runtime_graph, MAY_IMPORT)
    assert not bad, "imports against docs/architecture.md's package table:\n" + "\n".join(bad)


def test_no_domain_package_imports_credence(runtime_graph: ImportGraph) -> None:
    """The service layer sits on top: nothing below it reaches up (a subset of the layer table, named)."""
    bad = [
        f"{imp.importer} imports {imp.target} [{imp.where(ROOT)}]"
        for imp in runtime_graph.imports
        if imp.importer.split(".")[0] in DOMAIN_PACKAGES and imp.target.split(".")[0] == "credence"
    ]
    assert not bad, "\n".join(bad)


def test_moderation_never_imports_the_generator(runtime_graph: ImportGraph) -> None:
    """Screening must not load a model: moderation/ (training included) never imports generator/."""
    bad = [
        f"{imp.importer} imports {imp.target} [{imp.where(ROOT)}]"
        for imp in runtime_graph.imports
        if imp.importer.split(".")[0] == "moderation" and imp.target.split(".")[0] == "generator"
    ]
    assert not bad, "\n".join(bad)


def test_installed_packages_never_import_tests_or_bench(runtime_graph: ImportGraph) -> None:
    """What ships in the wheel runs without the checkout's tests/ and bench/."""
    bad = [
        f"{imp.importer} imports {imp.target} [{imp.where(ROOT)}]"
        for imp in runtime_graph.imports
        if imp.importer.split(".")[0] in RUNTIME_PACKAGES and imp.target.split(".")[0] in {"tests", "bench"}
    ]
    assert not bad, "\n".join(bad)


def test_bench_imports_only_tests_support(runtime_graph: ImportGraph) -> None:
    """bench/ and tests/ share one small module, tests.support; bench/ imports nothing else of tests/."""
    bad = [
        f"{imp.importer} imports {imp.target} [{imp.where(ROOT)}]"
        for imp in runtime_graph.imports
        if imp.importer.split(".")[0] == "bench"
        and imp.target.split(".")[0] == "tests"
        and not (imp.target == "tests.support" or imp.target.startswith("tests.support."))
    ]
    assert not bad, "\n".join(bad)


def test_no_runtime_file_over_500_lines() -> None:
    """A runtime module does one job; bench/, tests/ and training code may be longer."""
    long = []
    for package in RUNTIME_PACKAGES:
        for path in python_files(ROOT, package):
            relative = path.relative_to(ROOT).as_posix()
            if any(relative.startswith(prefix + "/") for prefix in NON_RUNTIME_DIRS):
                continue
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_RUNTIME_LINES:
                long.append(f"{relative}: {lines} lines")
    assert not long, f"runtime files over {MAX_RUNTIME_LINES} lines:\n" + "\n".join(long)


# --- the checker checks itself, on a tiny package written for the purpose ----------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """a -> b at module level, b -> c under TYPE_CHECKING, c -> a inside a function: one cycle, its path named."""
    _write(
        tmp_path,
        {
            "credence/__init__.py": "",
            "credence/a.py": "from credence import b\n",
            "credence/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import thing\n",
            "credence/c.py": "def late():\n    from . import a\n    return a\n",
            "credence/d.py": "from credence.a import x\n",  # depends on the cycle, is not in it
            "credence/sub/__init__.py": "",
            "credence/sub/e.py": "from ..d import y\nfrom . import f\n",
            "credence/sub/f.py": "import json\n",
        },
    )
    graph = scan(tmp_path, ["credence"])
    found = cycles(graph, "credence")
    assert len(found) == 1, found
    assert "credence.a, credence.b, credence.c" in found[0]
    assert "credence.a -> credence.b [credence/a.py:1 (module)]" in found[0]
    assert "-> credence.c [credence/b.py:3 (type_checking)]" in found[0]
    assert "-> credence.a [credence/c.py:2 (function)]" in found[0]
    # relative imports resolve: `..d` from credence.sub.e, `from . import f` to the module credence.sub.f
    targets = {(imp.importer, imp.target) for imp in graph.imports}
    assert ("credence.sub.e", "credence.d") in targets
    assert ("credence.sub.e", "credence.sub.f") in targets
    # without type-only imports the cycle is broken
    assert cycles(graph, "credence", type_checking=False) == []


def test_the_checker_finds_a_cycle_between_rooms(tmp_path: Path) -> None:
    """A module and a subpackage that import each other through different modules: no module cycle, a room cycle."""
    _write(
        tmp_path,
        {
            "provenance/__init__.py": "",
            "provenance/fingerprint_index.py": "from .index.store import Store\n",
            "provenance/index/__init__.py": "",
            "provenance/index/store.py": "",
            "provenance/index/shards.py": "from ..fingerprint_index import Index\n",
        },
    )
    found = cycles(scan(tmp_path, ["provenance"]), "provenance")
    assert len(found) == 1, found
    assert found[0].startswith("2 rooms of provenance in a cycle (provenance.fingerprint_index, provenance.index)")
    assert (
        "via provenance.index.shards -> provenance.fingerprint_index [provenance/index/shards.py:1 (module)]"
        in found[0]
    )


def test_the_checker_finds_layer_violations(tmp_path: Path) -> None:
    """A domain package reaching up to credence/, and moderation loading the generator, are both reported."""
    _write(
        tmp_path,
        {
            "credence/__init__.py": "",
            "credence/settings.py": "",
            "generator/__init__.py": "",
            "moderation/__init__.py": "",
            "moderation/train.py": "import importlib\ndef f():\n    return importlib.import_module('generator')\n",
            "provenance/__init__.py": "",
            "provenance/x.py": "import typing\nif typing.TYPE_CHECKING:\n    from credence.settings import S\n",
            "detector/__init__.py": "from provenance import x\n",
        },
    )
    graph = scan(tmp_path, ["credence", "generator", "moderation", "provenance", "detector"])
    bad = layer_violations(graph, MAY_IMPORT)
    assert len(bad) == 2, bad
    assert any(line.startswith("moderation.train imports generator [moderation/train.py:3 (function)]") for line in bad)
    assert any(line.startswith("provenance.x imports credence.settings") for line in bad)
