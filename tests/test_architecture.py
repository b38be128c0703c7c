"""The shape of kit, read from its source with `ast` (nothing is imported, no TensorFlow): fast, and runnable.

    python tests/test_architecture.py     # prints every problem found, exit status 1 if there is one

What is checked, over every module under kit/:

(a) no import cycle. The graph has every `import` and `from ... import` anywhere in a module (inside
    functions too, relative ones resolved, `importlib.import_module("kit.x")` with a literal name);
    `from kit.x import y` is an edge to kit.x.y when that is a module, else to kit.x. Importing a package
    is an edge to its `__init__` only, never to its sub-modules. Imports under `if TYPE_CHECKING:` do not
    run, so they make no cycle (they still count for (b)). Also: an import naming a kit module that does
    not exist (a module moved, its importer not updated) is a problem of its own.
(b) only the orchestrators (kit.__main__, kit.demo) import a stage (STAGES): a stage never imports
    another, and no library module imports one (that would make the stage a library of every stage
    that imports the library).
(c) no module is over 300 lines unless its docstring has a line starting "Over 300 lines:" saying why.
(d) the run folder's file names (RUN_FILES) are spelled only in kit/runs.py (RunDir): a string literal
    that is one of them, or ends in "/<name>", anywhere else is a path built around RunDir. Docstrings
    and messages that merely mention a file ("best.keras is missing: ...") are not paths and pass, and so
    does another folder's file of the same name where its own owner spells it (NAMESAKES).
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "kit"
STAGES = frozenset({"kit.data.download", "kit.data.index", "kit.train.fit", "kit.train.lr_find", "kit.submit.submit",
                    "kit.submit.predict", "kit.submit.export", "kit.submit.upload", "kit.report.report"})
ORCHESTRATORS = frozenset({"kit.__main__", "kit.demo"})
MAX_LINES = 300
REASON = "Over 300 lines:"
RUN_FILES = ("best.keras", "classes.json", "summary.json", "val_predictions.csv", "metrics.csv", "head-stage.npz",
             "report.html")
RUN_FILES_OWNER = "kit.runs"
# (module, name): another folder's file that shares a run file's name, spelled once by that folder's owner.
NAMESAKES = {("kit.data.dataset", "classes.json"): "the index's own classes.json (data/<slug>/index/)"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (one of the package's own)
    line: int
    runs: bool  # False under `if TYPE_CHECKING:`


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package (kit/data/__init__.py is kit.data)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    def __init__(self, name: str, is_package: bool, known: set[str]):
        self.name, self.known, self.found, self.runs, self.missing = name, known, [], True, []
        self.package = name if is_package else name.rpartition(".")[0]

    def add(self, target: str | None, node: ast.AST, exact: bool = True) -> None:
        """An edge to `target` or the nearest module holding it; `exact`: it must be a module itself."""
        if exact and target and target.split(".")[0] == self.known_root() and target not in self.known:
            self.missing.append((target, node.lineno))
        while target and target not in self.known:  # kit.x.attr -> kit.x; outside the package -> nothing
            target = target.rpartition(".")[0]
        if target and target != self.name:
            self.found.append(Import(self.name, target, node.lineno, self.runs))

    def known_root(self) -> str:
        return self.name.split(".")[0]

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            runs, self.runs = self.runs, False
            for child in node.body:
                self.visit(child)
            self.runs = runs
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # from . import x, from ..m import y
            base = self.package.split(".")
            base = base[:len(base) - node.level + 1] if node.level > 1 else base
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:
            submodule = f"{module}.{alias.name}"
            self.add(submodule if submodule in self.known else module, node, exact=bool(module))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if called in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            self.add(node.args[0].value, node)
        self.generic_visit(node)


def _visited(root: Path, package: str) -> dict[str, _Imports]:
    names = module_names(root, package)
    visitors = {}
    for name, path in names.items():
        visitors[name] = _Imports(name, path.name == "__init__.py", set(names))
        visitors[name].visit(ast.parse(path.read_text(), str(path)))
    return visitors


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, list[Import]]:
    """{module: the package's modules it imports, with line numbers}, for every module of the package."""
    return {name: visitor.found for name, visitor in _visited(root, package).items()}


def missing_module_problems(root: Path = ROOT, package: str = PACKAGE) -> list[str]:
    """Imports naming a module of the package that does not exist (a module moved, the import not updated)."""
    names = module_names(root, package)
    return [f"{names[name].relative_to(root)}:{line}: {name} imports {target}, which is not a module of {package}"
            for name, visitor in _visited(root, package).items() for target, line in visitor.missing]


def _where(edge: Import, names: dict[str, Path], root: Path) -> str:
    return f"{names[edge.source].relative_to(root)}:{edge.line}"


def find_cycles(graph: dict[str, list[Import]]) -> list[list[Import]]:
    """One cycle (its edges, in order) per strongly connected group of modules, through imports that run."""
    edges = {name: sorted({e.target: e for e in found if e.runs}.values(), key=lambda e: e.target)
             for name, found in graph.items()}
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(node: str) -> None:  # Tarjan (recursive: a package is never that deep)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in edges.get(node, []):
            if edge.target not in index:
                connect(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            connect(node)
    cycles = []
    for group in groups:  # the shortest way from the group's first module back to itself
        start = min(group)
        paths, seen = [[e] for e in edges[start] if e.target in group], set()
        while paths:
            path = paths.pop(0)
            if path[-1].target == start:
                cycles.append(path)
                break
            if path[-1].target in seen:
                continue
            seen.add(path[-1].target)
            paths += [path + [e] for e in edges[path[-1].target] if e.target in group]
    return cycles


def cycle_problems(root: Path = ROOT, package: str = PACKAGE) -> list[str]:
    names, graph = module_names(root, package), import_graph(root, package)
    return ["import cycle: " + " -> ".join([cycle[0].source] + [e.target for e in cycle])
            + " (" + ", ".join(_where(e, names, root) for e in cycle) + ")" for cycle in find_cycles(graph)]


def stage_problems(root: Path = ROOT, package: str = PACKAGE, stages=STAGES, orchestrators=ORCHESTRATORS) -> list[str]:
    names, graph, problems = module_names(root, package), import_graph(root, package), []
    for missing in sorted(set(stages) - set(names)):
        problems.append(f"stage {missing} is not a module of {package}: update STAGES in {Path(__file__).name}")
    for name in sorted(graph):
        if name in orchestrators:
            continue
        for edge in sorted(graph[name], key=lambda e: e.line):
            if edge.target in stages:
                who = "stage" if name in stages else "library module"
                problems.append(f"{_where(edge, names, root)}: {who} {name} imports stage {edge.target} "
                                f"(only {', '.join(sorted(orchestrators))} may)")
    return problems


def size_problems(root: Path = ROOT, package: str = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    problems = []
    for name, path in module_names(root, package).items():
        text = path.read_text()
        lines = len(text.splitlines())
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > limit and not any(line.strip().startswith(REASON) for line in docstring.splitlines()):
            problems.append(f"{path.relative_to(root)}: {lines} lines (> {limit}) and its docstring has no line "
                            f"starting '{REASON}' giving the reason")
    return problems


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def run_file_problems(root: Path = ROOT, package: str = PACKAGE, files=RUN_FILES, owner=RUN_FILES_OWNER,
                      namesakes=NAMESAKES) -> list[str]:
    pattern = re.compile(r"(?:^|[/\\])(" + "|".join(map(re.escape, files)) + r")$")
    problems = []
    for name, path in module_names(root, package).items():
        if name == owner:
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                match = pattern.search(node.value.strip())
                if match and (name, match.group(1)) not in namesakes:
                    problems.append(f"{path.relative_to(root)}:{node.lineno}: run file name {match.group(1)!r} "
                                    f"spelled outside {owner} ({node.value!r}): use RunDir's attribute")
    return problems


def all_problems(root: Path = ROOT, package: str = PACKAGE) -> dict[str, list[str]]:
    return {"(a) import cycles": cycle_problems(root, package),
            "(a') imports of missing modules": missing_module_problems(root, package),
            "(b) stage imports": stage_problems(root, package),
            "(c) module size": size_problems(root, package), "(d) run file names": run_file_problems(root, package)}


# ---- the checks, on kit --------------------------------------------------------------------------------

def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)


def test_kit_has_no_import_cycle():
    problems = cycle_problems()
    assert not problems, _report(problems)


def test_every_import_of_a_kit_module_names_one_that_exists():
    problems = missing_module_problems()
    assert not problems, _report(problems)


def test_only_the_orchestrators_import_a_stage():
    problems = stage_problems()
    assert not problems, _report(problems)


def test_no_module_is_over_300_lines_without_a_reason():
    problems = size_problems()
    assert not problems, _report(problems)


def test_run_folder_file_names_are_spelled_only_in_runs():
    problems = run_file_problems()
    assert not problems, _report(problems)


# ---- the checker, on small made-up packages ------------------------------------------------------------

def make_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / "kit" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_graph_sees_function_level_submodule_relative_and_dynamic_imports(tmp_path):
    root = make_package(tmp_path, {
        "__init__.py": "", "a.py": "def f():\n    from kit.sub import b\n", "sub/__init__.py": "X = 1\n",
        "sub/b.py": "from . import c\nfrom .c import thing\nfrom ..a import f\n", "sub/c.py": "from kit.sub import X\n",
        "d.py": "import importlib\nimportlib.import_module('kit.a')\nimport kit.sub.c as c\nimport numpy\n",
        "e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kit import d\n"})
    graph = {name: sorted((e.target, e.runs) for e in edges) for name, edges in import_graph(tmp_path).items()}
    assert graph["kit.a"] == [("kit.sub.b", True)]  # inside a function; b is a submodule, not sub's attribute
    assert graph["kit.sub.b"] == [("kit.a", True), ("kit.sub.c", True), ("kit.sub.c", True)]
    assert graph["kit.sub.c"] == [("kit.sub", True)]  # X is the package's: its __init__ only
    assert graph["kit.d"] == [("kit.a", True), ("kit.sub.c", True)]  # numpy is not the package's
    assert graph["kit.e"] == [("kit.d", False)]
    assert cycle_problems(root) == ["import cycle: kit.a -> kit.sub.b -> kit.a (kit/a.py:2, kit/sub/b.py:3)"]
    assert missing_module_problems(root) == []
    (root / "kit" / "f.py").write_text("from kit.gone import x\nimport kit.sub.c.nope\nfrom kit.sub import nope\n")
    assert missing_module_problems(root) == ["kit/f.py:1: kit.f imports kit.gone, which is not a module of kit",
                                             "kit/f.py:2: kit.f imports kit.sub.c.nope, which is not a module of kit"]


def test_a_type_checking_import_makes_no_cycle_and_a_package_import_is_not_its_submodules(tmp_path):
    root = make_package(tmp_path, {
        "__init__.py": "", "p/__init__.py": "from kit.p import q\n", "p/q.py": "import kit.p\n",
        "x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kit import y\n",
        "y.py": "import kit.x\n"})
    assert cycle_problems(root) == ["import cycle: kit.p -> kit.p.q -> kit.p (kit/p/__init__.py:1, kit/p/q.py:1)"]


def test_stage_rules_name_the_importer_the_stage_and_the_line(tmp_path):
    root = make_package(tmp_path, {
        "__init__.py": "", "__main__.py": "import kit.s1\nimport kit.s2\n", "s1.py": "x = 1\n",
        "s2.py": "import os\n\ndef run():\n    from kit import s1\n", "lib.py": "from kit.s1 import x\n",
        "pkg/__init__.py": "", "user.py": "import kit.pkg\n"})
    problems = stage_problems(root, stages={"kit.s1", "kit.s2", "kit.gone"}, orchestrators={"kit.__main__"})
    assert problems == ["stage kit.gone is not a module of kit: update STAGES in test_architecture.py",
                        "kit/lib.py:1: library module kit.lib imports stage kit.s1 (only kit.__main__ may)",
                        "kit/s2.py:4: stage kit.s2 imports stage kit.s1 (only kit.__main__ may)"]


def test_size_and_run_file_rules(tmp_path):
    long = "x = 1\n" * 301
    root = make_package(tmp_path, {
        "__init__.py": "", "long.py": '"""Long."""\n' + long,
        "excused.py": '"""Long.\n\nOver 300 lines: a table."""\n' + long,
        "runs.py": 'BEST = "best.keras"\n',
        "uses.py": '"""Writes best.keras."""\nfrom pathlib import Path\np = Path("r") / "best.keras"\n'
                   'q = f"{p}/metrics.csv"\nmsg = "summary.json is missing: retrain"\n'})
    assert size_problems(root) == ["kit/long.py: 302 lines (> 300) and its docstring has no line starting "
                                   "'Over 300 lines:' giving the reason"]
    found = run_file_problems(root)
    assert [p.split(": run file name ")[0] for p in found] == ["kit/uses.py:3", "kit/uses.py:4"], found
    assert len(run_file_problems(root, namesakes={("kit.uses", "metrics.csv"): "its own"})) == 1


def main() -> int:
    problems = all_problems()
    graph = import_graph()
    print(f"kit: {len(graph)} modules, {sum(len({e.target for e in edges}) for edges in graph.values())} imports")
    for check, found in problems.items():
        print(f"{check}: {'ok' if not found else _report(found)}")
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
