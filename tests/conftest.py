"""Fixtures shared by the whole suite: the real server and one small built repository."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders.build import BuildOptions, build
from builders.data import Dataset, load_dataset
from server import TritonServer

pytest_plugins = ["server.pytest_plugin"]

# A background job of a non-interactive shell (`make test &` in a script) starts with SIGINT
# ignored, and the CLIs the tests start would inherit that and never see the tests' Ctrl-C.
# A handler is not inherited: they start with the default, as from a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def small_dataset() -> Dataset:
    """A small synthetic dataset: 1,500 items, 300 users (builds in about a minute)."""
    return load_dataset("synthetic", seed=3, n_items=1500, n_users=300)


@pytest.fixture(scope="session")
def small_repository(tmp_path_factory: pytest.TempPathFactory, small_dataset: Dataset) -> Path:
    """Every model of both pipelines at version 1, 50 candidates, DCN-v2 rankers. Treat it as
    read-only: copy it (shutil.copytree) before adding versions.

    The rankers are DCN-v2, not the default's choice (`--ranker auto`): which kind wins on
    data this small may differ between machines, and the tests of the GPU profile and the
    SavedModel need the DCN; LightGBM rankers are served in `test_lambdamart_served.py`."""
    path = tmp_path_factory.mktemp("small_repository")
    options = BuildOptions(repo=path, num_candidates=50, ranker="dcn")
    build(options, small_dataset)
    return path


@pytest.fixture(scope="session")
def small_server(small_repository: Path) -> Iterator[TritonServer]:
    """The real tritonserver serving `small_repository` (explicit mode, everything loaded).
    Shared by many tests: do not unload models or change configs on it."""
    with TritonServer(
        small_repository, model_control="explicit", load_models=["*"], exit_timeout_secs=5
    ) as server:
        yield server
