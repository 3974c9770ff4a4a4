"""The README shows the commands that do the work: install and demo, then `.ci/run` and its exact pytest line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def last_command(script: Path) -> str:
    lines = [ln.strip() for ln in script.read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")][-1]


def test_the_readme_shows_the_exact_test_command_that_ci_run_ends_with() -> None:
    command = last_command(ROOT / ".ci" / "run")
    assert command.startswith("exec "), f".ci/run should end by exec-ing pytest, got {command!r}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert command.removeprefix("exec ") in readme


def test_the_readme_starts_with_the_install_and_demo_command_then_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert "confidence-router demo" in blocks[0] and 'pip install -e ".[demo]"' in blocks[0]
    assert blocks[1].strip() == "bash .ci/run"
