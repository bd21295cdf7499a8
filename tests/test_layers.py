"""Every import in ``courtyard/`` follows the layers ``docs/architecture.md`` draws: a module
imports only from its own layer and the ones below, at run time, inside functions and under
``TYPE_CHECKING`` alike. The one exception the document names (``app.Hub`` as a type) is the
only one allowed."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "courtyard"
DOC = ROOT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, without the "courtyard." prefix
    target: str
    kind: str  # "top", "function" or "type"
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "courtyard"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


def layer_table() -> dict[str, int]:
    """``{pattern: layer}`` from the fenced table under the layers heading."""
    text = DOC.read_text()
    section = text.split("## Layers", 1)[1]
    table = section.split("```", 2)[1]
    layers: dict[str, int] = {}
    for line in table.strip().splitlines()[1:]:
        number, _name, patterns = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        for pattern in patterns.split():
            assert pattern not in layers, f"{pattern} is placed twice in docs/architecture.md"
            layers[pattern] = int(number)
    return layers


def layer_of(module: str, table: dict[str, int]) -> int | None:
    if module in table:
        return table[module]
    parts = module.split(".")
    for n in range(len(parts), 0, -1):  # the longest pkg.* pattern that covers it
        pattern = ".".join(parts[:n]) + ".*"
        if pattern in table:
            return table[pattern]
    return None


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text())
    kinds: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                kinds.setdefault(id(inner), "function")
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                kinds[id(inner)] = "type"
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "courtyard":
        package = []
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("courtyard"):
                stem = node.module.removeprefix("courtyard").lstrip(".")
            else:
                continue
            for alias in node.names:
                full = f"{stem}.{alias.name}" if stem else alias.name
                targets.append(full if full in known else (stem or "courtyard"))
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("courtyard").lstrip(".") or "courtyard"
                       for a in node.names if a.name.split(".")[0] == "courtyard"]
        for target in targets:
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                found.append(Import(name, target, kinds.get(id(node), "top"), node.lineno))
    return found


def test_every_module_is_placed_in_a_layer():
    table = layer_table()
    unplaced = sorted(m for m in modules() if layer_of(m, table) is None)
    assert not unplaced, f"place these modules in docs/architecture.md's layer table: {unplaced}"
    unused = sorted(p for p in table if not any(
        m == p or (p.endswith(".*") and (m == p[:-2] or m.startswith(p[:-1])))
        for m in modules()))
    assert not unused, f"the layer table names modules that do not exist: {unused}"


def test_imports_go_down_the_layers():
    table, known = layer_table(), modules()
    upward = []
    for name, path in known.items():
        for imp in imports_of(name, path, known):
            source, target = layer_of(imp.source, table), layer_of(imp.target, table)
            if source is not None and target is not None and target > source:
                upward.append(f"courtyard/{imp.source.replace('.', '/')} line {imp.line} "
                              f"({imp.kind}) imports {imp.target}: layer {source} -> {target}")
    assert not upward, "imports against docs/architecture.md's layers:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser finds relative, absolute, in-function and TYPE_CHECKING imports."""
    source = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
              "from ..db import queries\nimport courtyard.lifecycle\n"
              "if TYPE_CHECKING:\n    from ..app import Hub\n"
              "def f():\n    from .. import routing\n")
    path = tmp_path / "courtyard" / "auth" / "fake.py"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    known = {"db.queries": path, "lifecycle": path, "app": path, "routing": path, "auth": path,
             "auth.fake": path}
    found = {(i.target, i.kind) for i in imports_of("auth.fake", path, known)}
    assert found == {("db.queries", "top"), ("lifecycle", "top"), ("app", "type"),
                     ("routing", "function")}
