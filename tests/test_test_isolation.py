"""Test modules share helpers through tests/support/, never by importing one another.

Importing a test module runs its module-level setup and re-collects its tests under another name, and
ties one module's fixtures to another's; the helper belongs in tests/support/.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def module_names_in(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("test_*.py")}


def imports_of_test_modules(source: str, names: set[str]) -> list[str]:
    """The test modules ``source`` imports, however it spells it (plain, ``tests.``-qualified, relative)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            modules = [base] if base else [alias.name for alias in node.names]
        else:
            continue
        found += [m for m in modules if m.split(".")[-1] in names or m.split(".")[0] in names]
    return found


def test_no_test_module_imports_another() -> None:
    names = module_names_in(TESTS)
    offenders = {path.name: hits for path in sorted(TESTS.glob("*.py"))
                 if (hits := imports_of_test_modules(path.read_text(encoding="utf-8"), names))}
    assert not offenders, f"move these helpers into tests/support/: {offenders}"


def test_the_scan_sees_every_spelling() -> None:
    names = {"test_litellm_proxy"}
    for source in ("from test_litellm_proxy import free_port", "import test_litellm_proxy",
                   "from tests.test_litellm_proxy import stop", "from . import test_litellm_proxy"):
        assert imports_of_test_modules(source, names), source
    assert not imports_of_test_modules("from support.proxy import free_port\nimport litellm", names)
