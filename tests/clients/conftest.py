"""Fixtures of the client tests: the catalog of the shared small repository, and endpoints
where nothing answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.launcher import LOOPBACK, free_port


@pytest.fixture(scope="session")
def catalog_path(small_repository: Path) -> Path:
    return small_repository / "search" / "1" / "catalog.parquet"


@pytest.fixture
def refused_url() -> str:
    """host:port where nothing listens: connections are refused."""
    return f"{LOOPBACK}:{free_port()}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """host:port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(16)
        yield f"{LOOPBACK}:{sock.getsockname()[1]}"
