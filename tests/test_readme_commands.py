"""Every command the READMEs show runs as written: each `python -m` entry point of the project
(with its subcommand, where one is shown) answers `--help` under the interpreter shown (the
project's `.venv`, or the Ray Serve baseline's own environment, which `make test` sets up too),
and each `make` target they name is in the Makefile."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_layout import PACKAGES

ROOT = Path(__file__).resolve().parents[1]
#: `[interpreter] -m module`, then a subcommand where the next word is one ("clients search").
MODULE_COMMAND = re.compile(r"([\w./-]*python) -m ([a-z_][\w.]*)(?: ([a-z][a-z-]*)\b(?![./]))?")
#: Interpreters the READMEs name other than the project's own.
OTHER_PYTHONS = {"build/ray-venv/bin/python"}
MAKE_TARGET = re.compile(r"`make ([a-z][a-z-]+)")


def readmes() -> list[Path]:
    files = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / f for f in files if not f.startswith("docs/results/")]


def shown_commands() -> list[tuple[str, ...]]:
    """(interpreter, module[, subcommand]) for each project entry point the READMEs show;
    the interpreter is "python" unless the README names another."""
    commands = set()
    for readme in readmes():
        for python, module, sub in MODULE_COMMAND.findall(readme.read_text()):
            if module.split(".")[0] in PACKAGES:
                python = python if python in OTHER_PYTHONS else "python"
                commands.add((python, module, sub) if sub else (python, module))
    return sorted(commands)


def test_the_readmes_show_the_main_entry_points():
    shown = {command[1] for command in shown_commands()}
    assert {"builders", "clients", "perf", "server", "perf.benchmarks.bench"} <= shown


@pytest.mark.parametrize("command", shown_commands(), ids=" ".join)
def test_each_shown_entry_point_answers_help(command):
    python, module, *sub = command
    interpreter = str(ROOT / python) if python in OTHER_PYTHONS else sys.executable
    result = subprocess.run(
        [interpreter, "-m", module, *sub, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout.lower()


def test_each_make_target_the_readmes_name_is_in_the_makefile():
    targets = set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = {t for readme in readmes() for t in MAKE_TARGET.findall(readme.read_text())}
    assert named, "no `make` target found in the READMEs"
    assert named - targets == set()
