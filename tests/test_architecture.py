"""The architecture shows in the tree, and this test keeps it that way.

- core never imports a backend, the server, an observer or the CLI;
- backends never import the server or the CLI;
- the server reaches backends only through the registry (``glasshouse.backends``), never a
  backend module, and never the CLI;
- the receipt package never imports backends, the server or the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "glasshouse"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    package = "glasshouse." + ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("glasshouse")}


def _package_files(package: str) -> list[Path]:
    root = SRC / package
    return sorted(root.rglob("*.py")) if root.is_dir() else [SRC / f"{package}.py"]


RULES = [
    ("core", ("glasshouse.backends", "glasshouse.server", "glasshouse.observe", "glasshouse.cli")),
    ("receipt", ("glasshouse.backends", "glasshouse.server", "glasshouse.cli")),
    ("backends", ("glasshouse.server", "glasshouse.cli")),
    ("observe", ("glasshouse.server", "glasshouse.cli", "glasshouse.backends.")),
    ("policy", ("glasshouse.backends", "glasshouse.server", "glasshouse.cli")),
    ("training", ("glasshouse.backends", "glasshouse.server", "glasshouse.cli")),
]


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_layering(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = []
    for path in _package_files(package):
        for name in _imports(path):
            if any(
                name == f or name.startswith(f if f.endswith(".") else f + ".") for f in forbidden
            ):
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


def test_server_uses_backends_only_through_the_registry() -> None:
    if not (SRC / "server").is_dir():
        pytest.skip("no server package in this build")
    allowed = {
        "glasshouse.backends",
        "glasshouse.backends.create",
        "glasshouse.backends.auto_select",
        "glasshouse.backends.names",
    }
    offenders = []
    for path in _package_files("server"):
        for name in _imports(path):
            if name.startswith("glasshouse.backends") and name not in allowed:
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
            entry_point = path.name in ("cli.py", "__main__.py")  # a command line may share helpers
            if name.startswith("glasshouse.cli") and not entry_point:
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


# -- packages: no private names across them, no cycles between them ---------------------
def _package_of(module: str) -> str:
    """``glasshouse.receipt.log`` -> ``receipt``; top-level modules are their own part."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _runtime_imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import not under ``TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = "glasshouse." + ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    package = package.rstrip(".")
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                typing_only.update(id(n) for n in ast.walk(child))
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [(module, alias.name, node.lineno) for alias in node.names]
    return [f for f in found if f[0].startswith("glasshouse")]


def _source_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "guest/init" not in p.as_posix())


def _module_of(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("glasshouse", *parts))


def _private_owner(module: str, name: str | None) -> str | None:
    """The package a private module or name belongs to (only it may import it), or None."""
    parts = module.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and part != "__init__":
            return ".".join(parts[:i])
    if name is not None and name.startswith("_") and not name.startswith("__"):
        is_package = (SRC.joinpath(*parts[1:]) / "__init__.py").exists()
        return module if is_package else ".".join(parts[:-1])
    return None


def test_no_private_names_across_packages() -> None:
    """An underscored module or name is its package's own: code outside that package
    (sub-packages included) imports only public modules and names. Tests may look inside."""
    offenders = []
    for path in _source_files():
        me = _module_of(path)
        for module, name, line in _runtime_imports(path):
            owner = _private_owner(module, name)
            if owner is not None and not (me == owner or me.startswith(owner + ".")):
                what = f"{module}.{name}" if name else module
                offenders.append(f"{path.relative_to(SRC)}:{line} imports {what}")
    assert offenders == []


def test_no_import_cycles_between_packages() -> None:
    """The runtime import graph between parts (core, receipt, backends, observe, policy,
    server, cli, ...; top-level modules count as parts of their own) has no cycle.
    Imports under ``TYPE_CHECKING`` are annotations only and do not count."""
    graph: dict[str, set[str]] = {}
    for path in _source_files():
        mine = _package_of(_module_of(path)) or _module_of(path)
        for module, name, _ in _runtime_imports(path):
            target = _package_of(module)
            if not target and name is not None:  # from glasshouse import x
                target = name
            target = target or module
            if target and target != mine and target not in ("__version__", "RECEIPT_VERSION"):
                graph.setdefault(mine, set()).add(target)
    cycles = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif nxt not in trail and nxt > start:  # report each cycle once
                    stack.append((nxt, [*trail, nxt]))
    assert cycles == []
