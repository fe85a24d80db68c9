"""The Makefile documents itself and its setup is idempotent."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make(*args):
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_help_lists_every_documented_target():
    result = make("help")
    assert result.returncode == 0
    listed = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout).split()
    documented = re.findall(r"^([a-zA-Z_-]+):.*## ", (ROOT / "Makefile").read_text(), re.M)
    assert {"setup", "serve", "test", "lint", "clean"} <= set(documented)
    assert set(documented) <= set(listed)


def test_setup_is_quiet_when_already_done():
    result = make("setup")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / "README.md").read_text().split("\n## ")[1]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_pinned_packages_are_consistent():
    """`pip check` is clean but for the wheels installed with --no-deps on purpose."""
    nodeps = {
        re.split(r"[=<>\[ ]", line)[0].lower()
        for line in (ROOT / "requirements-nodeps.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "check"],
        capture_output=True,
        text=True,
    )
    problems = [
        line
        for line in result.stdout.splitlines()
        if line.strip() and line.split()[0].lower() not in nodeps
    ]
    assert problems == []
