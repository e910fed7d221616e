"""CI runs the README's test command exactly as a new user types it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_quick_start() -> list[str]:
    """The command lines of the README's quick start (its first sh block)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", readme, re.S)
    assert block, "README.md has no quick start with an sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_quick_start_is_two_commands_one_of_them_the_tests():
    lines = readme_quick_start()
    assert len(lines) == 2
    assert lines[1].endswith("&& pytest")


def test_ci_runs_the_readme_test_command_as_written():
    commands = [part.strip() for part in readme_quick_start()[1].split("&&")]
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands == [line for line in ci_lines if line in commands]
