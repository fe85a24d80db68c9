"""pytest fixtures for tests against the real local tritonserver.

Enable with `pytest_plugins = ["server.pytest_plugin"]` in a conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.launcher import TritonServer


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """One server for the whole session: explicit model control on an empty repository.

    Tests write models into `triton_server.model_repository` and load them
    with `triton_server.load_model(name)`.
    """
    repository = tmp_path_factory.mktemp("model_repository")
    with TritonServer(repository, model_control="explicit", exit_timeout_secs=5) as server:
        yield server
