"""The client's errors: one class per way a call can fail, each with a CLI exit code.

`error_for_status` maps a gRPC status or an HTTP status code (as tritonclient
reports them) to one of these classes; the transports add their own
connection errors.
"""

from __future__ import annotations

import re


class ClientError(Exception):
    """A call failed. `str()` is one line; `exit_code` is what the CLI exits with;
    `attempts` is how many tries the call made."""

    exit_code = 1
    retryable = False
    #: Skip the endpoint for a moment after this error (it is down, not just busy).
    endpoint_down = False

    def __init__(self, message: str, endpoint: str = "") -> None:
        self.message = " ".join(message.split())
        self.endpoint = endpoint
        self.attempts = 1
        super().__init__(f"{endpoint}: {self.message}" if endpoint else self.message)


class InvalidArgumentError(ClientError):
    """The server (or the client, before sending) rejected the request's inputs."""

    exit_code = 2


class UnavailableError(ClientError):
    """The endpoint refused the connection, dropped it, or answered UNAVAILABLE."""

    exit_code = 3
    retryable = True
    endpoint_down = True


class OverloadedError(UnavailableError):
    """The server shed the request: a stage's queue was full, or the request waited in it
    past its timeout (Triton's UNAVAILABLE, HTTP 503). Retried with backoff."""

    exit_code = 7
    endpoint_down = False


class InFlightLimitError(OverloadedError):
    """The client's own limit on attempts in flight (`InFlightLimit`) refused the attempt
    before it was sent: the client sheds load it would otherwise queue at the server. Not
    retried: no endpoint of the client has a free slot sooner, and a wait would spend the
    caller's latency budget on a call the servers are too busy for."""

    retryable = False


class DeadlineExceededError(ClientError):
    """The call's deadline passed before an answer came."""

    exit_code = 4


class ContractError(ClientError):
    """The served model's inputs, outputs or versions differ from what the client expects."""

    exit_code = 5


class NotFoundError(ClientError):
    """The model, or the version asked for, is not served."""

    exit_code = 6


class ServerError(ClientError):
    """Any other error the server answered with (an internal error in a stage, say)."""


class TlsError(ClientError):
    """The TLS handshake failed: the server's certificate is not trusted or does not name
    the host, the server does not speak TLS, or it refused the client's certificate (or its
    absence, under mutual TLS). Not retried: the settings must change."""

    exit_code = 8


_GRPC = {
    "StatusCode.INVALID_ARGUMENT": InvalidArgumentError,
    "StatusCode.OUT_OF_RANGE": InvalidArgumentError,
    "StatusCode.UNAVAILABLE": UnavailableError,
    "StatusCode.DEADLINE_EXCEEDED": DeadlineExceededError,
    "StatusCode.NOT_FOUND": NotFoundError,
}
_HTTP = {
    "400": InvalidArgumentError,
    "404": NotFoundError,
    "502": UnavailableError,
    "503": UnavailableError,
    "504": DeadlineExceededError,
}


# Triton 2.51's Python backend answers INTERNAL (HTTP 500) "Stub process '<instance>' is not
# healthy." for every request sent to a model instance whose stub process died, and never
# starts a new stub by itself: the instance is back once its model is reloaded (as
# `server.StubWatchdog` does). The request did not run in that stage and the pipelines only
# read, so this is retried like UNAVAILABLE rather than failed as an internal error.
_DEAD_STUB = re.compile(r"Stub process '[^']*' is not healthy")


# What Triton 2.51 answers, as UNAVAILABLE (HTTP 503), when a dynamic batcher's queue policy
# rejects a request: its queue is full (`max_queue_size`), or the request waited longer than
# its timeout. An ensemble puts "in ensemble '<name>', " in front.
_SHED = re.compile(r"Exceeds maximum queue size|Request timeout expired")


def error_for_status(status: str | None, message: str, endpoint: str = "") -> ClientError:
    """The error for a tritonclient status: a gRPC `StatusCode.X` or an HTTP code."""
    if _DEAD_STUB.search(message):
        return UnavailableError(message, endpoint)
    kind = _GRPC.get(status or "") or _HTTP.get(status or "", ServerError)
    if kind is UnavailableError and _SHED.search(message):
        return OverloadedError(f"server overloaded: {message}", endpoint)
    return kind(message, endpoint)
