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
