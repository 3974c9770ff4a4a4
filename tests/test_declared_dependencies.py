"""Every distribution the package imports is declared in pyproject.toml, and the core imports only its own.

The imports are read with ``ast`` from the source (top-level and lazy ones alike), mapped to the
distributions that provide them, and checked against ``[project].dependencies`` and the extras."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("langchain_confidence_router", "litellm_hooks")
#: What the core may import besides the standard library: pure Python + numpy (+ pydantic, yaml for config).
CORE_ALLOWED = {"numpy", "pydantic", "pyyaml"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    return core, extras - {"langchain-confidence-router"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@cache
def _providers() -> dict[str, list[str]]:
    return packages_distributions()  # scans every installed distribution: once


def distributions(module: str) -> set[str]:
    if module in sys.stdlib_module_names or module in PACKAGES or module == "__future__":
        return set()
    dists = _providers().get(module)
    assert dists, f"{module!r} is imported but no installed distribution provides it"
    return {d.lower().replace("_", "-") for d in dists}


def test_every_imported_distribution_is_declared() -> None:
    core, extras = declared()
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in imports(path):
                dists = distributions(module)
                if dists and not dists & (core | extras):
                    missing.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(dists))})")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(missing)


def test_the_core_imports_only_core_dependencies() -> None:
    core, _ = declared()
    assert core >= CORE_ALLOWED
    wrong = []
    for path in sorted((ROOT / "langchain_confidence_router" / "core").rglob("*.py")):
        for module in imports(path):
            dists = distributions(module)
            if dists and not dists & CORE_ALLOWED:
                wrong.append(f"{path.relative_to(ROOT)}: {module}")
    assert not wrong, "the core must import neither LangChain nor LiteLLM nor any extra:\n" + "\n".join(wrong)


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    stray = tmp_path / "stray.py"
    stray.write_text("def f():\n    import hypothesis  # lazily, as the package's extras are\n")
    core, _ = declared()
    assert distributions("hypothesis") and not distributions("hypothesis") & core
    assert "hypothesis" in imports(stray)
