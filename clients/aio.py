"""The asyncio client: `async with AsyncClient(url) as client: await client.search(...)`.

The same core as `Client` (`clients.core.ClientCore`: settings, routing, retries, results
and every operation), run by `clients.core.run_async`; the transports use
tritonclient's asyncio clients (grpc.aio and aiohttp), created on first use
inside the running event loop and reused for every call. Use one
`AsyncClient` within one event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence

import aiohttp
import numpy as np
import tritonclient.grpc.aio as grpcaio
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from clients import contract
from clients.core import ClientCore, run_async
from clients.errors import ClientError, TlsError
from clients.results import Response, Result
from clients.tls import TlsConfig, explain_ssl_error
from clients.transport import (
    HTTP_SOCKET_TIMEOUT,
    connection_error,
    deadline_error,
    grpc_channel,
    grpc_response,
    http_response,
    infer_arguments,
    model_states,
    server_error,
    tls_reset_error,
)


def ssl_cause(err: Exception) -> ssl.SSLError | None:
    """The `ssl` error behind an aiohttp one (its `certificate_error`, `os_error` or
    cause), if any."""
    causes = ("certificate_error", "os_error", "__cause__")
    for cause in [getattr(err, name, None) for name in causes] + [err]:
        if isinstance(cause, ssl.SSLError):
            return cause
    return None


class AsyncGrpcTransport:
    """One gRPC endpoint over grpc.aio: one channel for every coroutine; over TLS when
    `tls` is set."""

    def __init__(self, url: str, tls: TlsConfig | None = None) -> None:
        self.url = url
        self.tls = tls
        self._client = None

    async def _call(self, seconds: float, method: str, *args, **kwargs):
        if self._client is None:
            self._client = grpcaio.InferenceServerClient(self.url, **grpc_channel(self.tls))
        try:
            return await getattr(self._client, method)(*args, client_timeout=seconds, **kwargs)
        except InferenceServerException as err:
            raise server_error(err, self.url, seconds, self.tls) from None

    async def infer(
        self, model: str, version: int | None, inputs: Mapping[str, np.ndarray], timeout: float
    ) -> Response:
        args, kwargs = infer_arguments(grpcaio, model, version, inputs, timeout)
        result = await self._call(timeout, "infer", *args, **kwargs)
        return grpc_response(model, result, self.url)

    async def health(self, timeout: float) -> dict:
        live = await self._call(timeout, "is_server_live")
        ready = await self._call(timeout, "is_server_ready")
        server = await self._call(timeout, "get_server_metadata", as_json=True)
        return {"live": live, "ready": ready, "server_version": server.get("version", "")}

    async def metadata(self, model: str, timeout: float) -> contract.ModelMetadata:
        return contract.parse_metadata(
            await self._call(timeout, "get_model_metadata", model, as_json=True)
        )

    async def models(self, timeout: float) -> list[dict]:
        index = await self._call(timeout, "get_model_repository_index", as_json=True)
        return model_states(index.get("models", []))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class AsyncHttpTransport:
    """One HTTP endpoint over aiohttp: a pool of keep-alive connections; HTTPS when `tls`
    is set."""

    def __init__(self, url: str, tls: TlsConfig | None = None) -> None:
        self.url = url
        self.tls = tls
        self._client = None

    async def _call(self, seconds: float, method: str, *args, **kwargs):
        if self._client is None:
            https = {"ssl": True, "ssl_context": self.tls.ssl_context()} if self.tls else {}
            self._client = httpaio.InferenceServerClient(
                self.url, conn_timeout=HTTP_SOCKET_TIMEOUT, **https
            )
        try:
            return await asyncio.wait_for(getattr(self._client, method)(*args, **kwargs), seconds)
        except InferenceServerException as err:
            raise server_error(err, self.url, seconds) from None
        except TimeoutError:
            raise deadline_error(seconds, self.url) from None
        except (OSError, aiohttp.ClientConnectionError) as err:
            raise self._connection_error(err) from None

    def _connection_error(self, err: Exception) -> ClientError:
        cause = ssl_cause(err) if self.tls else None
        if cause is not None:
            return TlsError(explain_ssl_error(cause, self.tls), self.url)
        if self.tls and isinstance(getattr(err, "os_error", err), ConnectionResetError):
            return tls_reset_error(self.url)
        return connection_error(err, self.url)

    async def infer(
        self, model: str, version: int | None, inputs: Mapping[str, np.ndarray], timeout: float
    ) -> Response:
        args, kwargs = infer_arguments(httpaio, model, version, inputs, timeout)
        result = await self._call(timeout, "infer", *args, **kwargs)
        return http_response(model, result, self.url)

    async def health(self, timeout: float) -> dict:
        live = await self._call(timeout, "is_server_live")
        ready = await self._call(timeout, "is_server_ready")
        server = await self._call(timeout, "get_server_metadata")
        return {"live": live, "ready": ready, "server_version": server.get("version", "")}

    async def metadata(self, model: str, timeout: float) -> contract.ModelMetadata:
        return contract.parse_metadata(await self._call(timeout, "get_model_metadata", model))

    async def models(self, timeout: float) -> list[dict]:
        return model_states(await self._call(timeout, "get_model_repository_index"))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


TRANSPORTS = {"grpc": AsyncGrpcTransport, "http": AsyncHttpTransport}


class AsyncClient(ClientCore):
    """Asyncio client with the same methods as `Client`, as coroutines."""

    transport_kinds = TRANSPORTS

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        version: int | None = None,
        *,
        timeout: float | None = None,
    ) -> Response:
        return await run_async(self._infer(model, inputs, version, timeout))

    async def search(
        self,
        query: str | bytes,
        user_id: int | None = None,
        k: int = 10,
        *,
        version: int | None = None,
        timeout: float | None = None,
    ) -> Result:
        return await run_async(self._search(query, user_id, k, version, timeout))

    async def recommend(
        self,
        user_id: int,
        k: int = 10,
        *,
        version: int | None = None,
        timeout: float | None = None,
    ) -> Result:
        return await run_async(self._recommend(user_id, k, version, timeout))

    async def health(self, timeout: float | None = None) -> list[dict]:
        return await run_async(self._health(timeout))

    async def models(self, timeout: float | None = None) -> list[dict]:
        return await run_async(self._models(timeout))

    async def verify(
        self, models: Sequence[str] = contract.PIPELINES, timeout: float | None = None
    ) -> dict[str, tuple[int, ...]]:
        return await run_async(self._verify(models, timeout))
