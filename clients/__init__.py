"""Clients of the deployed search and recommend pipelines.

`Client` (blocking) and `AsyncClient` (asyncio) over gRPC (default) or HTTP,
with deadlines, retries, canary routing and typed results. See README.md.
"""

from clients.aio import AsyncClient
from clients.client import Client
from clients.errors import (
    ClientError,
    ContractError,
    DeadlineExceededError,
    InFlightLimitError,
    InvalidArgumentError,
    NotFoundError,
    OverloadedError,
    ServerError,
    TlsError,
    UnavailableError,
)
from clients.results import Catalog, Item, Response, Result
from clients.retry import (
    AdaptiveInFlightLimit,
    FailureCounts,
    InFlightLimit,
    RetryBudget,
    RetryPolicy,
)
from clients.routing import Route
from clients.tls import TlsConfig

__all__ = [
    "AdaptiveInFlightLimit",
    "AsyncClient",
    "Catalog",
    "Client",
    "ClientError",
    "ContractError",
    "DeadlineExceededError",
    "FailureCounts",
    "InFlightLimit",
    "InFlightLimitError",
    "InvalidArgumentError",
    "Item",
    "NotFoundError",
    "OverloadedError",
    "Response",
    "Result",
    "RetryBudget",
    "RetryPolicy",
    "Route",
    "ServerError",
    "TlsConfig",
    "TlsError",
    "UnavailableError",
]
