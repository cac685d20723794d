"""The package's floors (electra_bench/__init__.py) hold: every import goes down, there is no import circle, no
private name crosses a module, and a function-local import says why it is deferred.

Imports are read with `ast` from the source, so nothing is imported to check them. The rule is checked twice
against synthetic modules (a back-up import, a cycle through a function-local import) to show that it can fail.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import electra_bench

PACKAGE = Path(electra_bench.__file__).parent
NAME = "electra_bench"


def floors(doc: str) -> dict[str, tuple[int, int]]:
    """Module (first part under the package) -> (floor index, position on its floor), from the package docstring."""
    block = doc.split("Floors, low to high:", 1)[1].split("\n\n", 1)[0]
    out = {}
    for level, line in enumerate(x for x in block.splitlines() if x.strip()):
        _, names = line.split(":", 1)
        for pos, name in enumerate(n.strip() for n in names.split(",")):
            out[name] = (level, pos)
    return out


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> list[tuple[str, list[str], bool, int]]:
    """(imported package module, names taken from it, inside a function, line) for every intra-package import."""
    source = path.read_text()
    mod = module_name(path, root)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    found = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                if target == NAME or target.startswith(NAME + "."):
                    names = [a.name for a in child.names]
                    subs = [n for n in names if (root.parent / target.replace(".", "/") / f"{n}.py").exists()
                            or (root.parent / target.replace(".", "/") / n).is_dir()]
                    for n in subs:  # `from . import results`: the submodule itself
                        found.append((f"{target}.{n}", [], local, child.lineno))
                    if len(subs) < len(names) or not subs:
                        found.append((target, [n for n in names if n not in subs], local, child.lineno))
            elif isinstance(child, ast.Import):
                found.extend((a.name, [], local, child.lineno) for a in child.names
                             if a.name == NAME or a.name.startswith(NAME + "."))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def floor_of(module: str, table: dict[str, tuple[int, int]]) -> tuple[int, int] | None:
    parts = module.split(".")
    return table.get(parts[1]) if len(parts) > 1 else None


def violations(root: Path, doc: str) -> list[str]:
    """Every breach of the floors' rules in the package at `root` (its floors listed in `doc`)."""
    table, problems, graph = floors(doc), [], {}
    for path in sorted(root.rglob("*.py")):
        mod = module_name(path, root)
        if mod == root.name:
            continue  # the package's __init__: the docstring, no imports
        here = floor_of(mod, table)
        if here is None:
            problems.append(f"{mod}: not on any floor of the package docstring")
            continue
        lines = path.read_text().splitlines()
        for target, names, local, line in imports(path, root):
            graph.setdefault(mod, set()).add(target)
            there = floor_of(target, table)
            same_group = mod.split(".")[1] == target.split(".")[1]  # inside model/ or tasks/
            if there is None and target != root.name:
                problems.append(f"{mod}:{line}: imports {target}, which is on no floor")
            elif there is not None and not same_group and there >= here:
                where = "the same floor (listed later)" if there[0] == here[0] else "a higher floor"
                problems.append(f"{mod}:{line}: imports {target} from {where}")
            private = [n for n in names if n.startswith("_")]
            if private and not same_group:
                problems.append(f"{mod}:{line}: imports private name(s) {', '.join(private)} of {target}")
            said = " ".join(lines[max(0, line - 2):line]).lower()
            if local and mod.split(".")[1] != "cli" and "deferred" not in said:
                problems.append(f"{mod}:{line}: function-local import of {target} without a '# deferred: why' comment")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a module importing itself)."""
    out, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                out.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return out


def test_the_package_stands_in_floors():
    assert violations(PACKAGE, electra_bench.__doc__) == []


def test_every_module_is_on_a_floor_and_every_floor_name_is_a_module():
    table = floors(electra_bench.__doc__)
    present = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert present == set(table)


def make_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / NAME
    root.mkdir(parents=True)
    (root / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


FAKE_DOC = """Floors, low to high:
  ground: registry, metrics
  contracts: results
  face: cli
"""


def test_a_back_up_import_fails_the_rule(tmp_path):
    """metrics (ground) importing results (contracts) is an import from a higher floor."""
    ok = make_package(tmp_path / "ok", {"registry.py": "", "metrics.py": "from .registry import x\n",
                                        "results.py": "from .metrics import y\n", "cli.py": ""})
    assert violations(ok, FAKE_DOC) == []
    bad = make_package(tmp_path / "bad", {"registry.py": "", "metrics.py": "from .results import z\n",
                                          "results.py": "from .metrics import y\n", "cli.py": ""})
    problems = violations(bad, FAKE_DOC)
    assert any(re.search(r"electra_bench\.metrics:1: imports electra_bench\.results from a higher floor", p)
               for p in problems), problems
    assert any(p.startswith("import cycle:") for p in problems), problems


def test_a_cycle_through_a_function_local_import_fails(tmp_path):
    """A deferred import is still an edge: registry -> metrics inside a function closes a circle with
    metrics -> registry at module level, and it runs up a floor order (metrics is listed after registry)."""
    root = make_package(tmp_path, {
        "registry.py": "def f():\n    # deferred: to dodge the circle\n    from .metrics import y\n",
        "metrics.py": "from .registry import f\n", "results.py": "", "cli.py": ""})
    problems = violations(root, FAKE_DOC)
    assert any("registry:3: imports electra_bench.metrics from the same floor (listed later)" in p for p in problems)
    assert any("import cycle: electra_bench.metrics -> electra_bench.registry -> electra_bench.metrics" in p
               or "import cycle: electra_bench.registry -> electra_bench.metrics -> electra_bench.registry" in p
               for p in problems), problems


@pytest.mark.parametrize("text, expected", [
    ("from .registry import _hidden\n", "imports private name(s) _hidden"),
    ("def f():\n    from .registry import x\n", "without a '# deferred: why' comment"),
    ("from electra_bench import stray\n", "imports electra_bench.stray, which is on no floor"),
])
def test_private_names_bare_deferred_imports_and_unknown_modules_fail(tmp_path, text, expected):
    root = make_package(tmp_path, {"registry.py": "x = _hidden = 1\n", "metrics.py": text, "results.py": "",
                                   "cli.py": "", "stray.py": ""})
    assert any(expected in p for p in violations(root, FAKE_DOC))
