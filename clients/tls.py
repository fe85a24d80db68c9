"""TLS for the clients: what to trust, what to present, and what a failure means.

`TlsConfig` holds the CA bundle (None: the system's roots), an optional client
certificate and key for mutual TLS, and (gRPC) a name to check the server's certificate
against. gRPC goes over TLS to Triton itself; HTTP to a TLS terminator in front of it (the
Gateway: Triton's HTTP endpoint has no TLS). `explain_tls_failure` (gRPC's connection error)
and `explain_ssl_error` (Python's) say in one line what went wrong and the likely fix.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

# gRPC's connection failures ("...; last error: ..."): pick_first's and round_robin's words.
_CONNECT = re.compile(r"failed to connect to all addresses|connections to all backends failing")
_VERIFY = re.compile(r"CERTIFICATE_VERIFY_FAILED:?\s*([^:]*)")


@dataclass(frozen=True)
class TlsConfig:
    """gRPC or HTTP over TLS. `ca`: PEM bundle of the CAs to trust (None: the system's);
    `cert` and `key`: the client's certificate chain and key, for mutual TLS; `server_name`
    (gRPC only): the name the server's certificate must carry when it differs from the host
    dialled (a port-forward to localhost, say)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a TLS client certificate and its key go together")
        for label, path in (("CA bundle", self.ca), ("certificate", self.cert), ("key", self.key)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS {label} {path} is not a file")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))

    def ssl_context(self, create=ssl.create_default_context) -> ssl.SSLContext:
        """A verifying client context for HTTPS (`create`: `ssl`'s or gevent's factory)."""
        context = create(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context

    def channel_args(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def _untrusted(tls: TlsConfig, detail: str) -> str:
    trusted = f"the CA bundle {tls.ca}" if tls.ca else "the system's CAs"
    return (
        f"TLS handshake failed: the server's certificate is not trusted by {trusted}"
        + (f" ({detail})" if detail else "")
        + ": give --tls-ca the CA that signed the server's certificate"
    )


MISNAMED = (
    "TLS handshake failed: the server's certificate does not name the host dialled: "
    "call the host the certificate was issued for, or set --tls-server-name"
)
NO_TLS = "TLS handshake failed: the server does not speak TLS on this port (drop --tls)"


def _refused(tls: TlsConfig) -> str:
    if tls.cert is None:
        return (
            "TLS handshake refused by the server: it probably requires mutual TLS "
            "(give --tls-cert and --tls-key)"
        )
    return (
        f"TLS handshake refused by the server: it probably does not accept the client "
        f"certificate {tls.cert} (signed by a CA it does not trust, or expired)"
    )


def explain_tls_failure(message: str, tls: TlsConfig | None) -> str | None:
    """Why a gRPC connection failed, when TLS is the likely cause; None otherwise.

    Without TLS on the client, only a server that hangs up at once (it expects a TLS
    handshake) is explained; the caller keeps such errors retryable.
    """
    if not _CONNECT.search(message):
        return None
    if tls is None:
        if "Socket closed" in message:
            return (
                "the server closed the connection at once: if this persists, it probably "
                "requires TLS (use --tls and --tls-ca)"
            )
        return None
    verify = _VERIFY.search(message)
    if verify:
        return _untrusted(tls, verify.group(1).strip())
    if "Hostname Verification Check failed" in message:
        return MISNAMED
    if "WRONG_VERSION_NUMBER" in message:
        return NO_TLS
    if "Socket closed" in message:
        return _refused(tls)
    handshake = re.search(r"(?:Tls|Ssl) handshake failed.*", message)
    if handshake:
        return f"TLS handshake failed: {handshake.group(0)}"
    return None


def explain_ssl_error(err: ssl.SSLError, tls: TlsConfig) -> str:
    """Why an HTTPS connection failed (Python's `ssl` errors), in the same words."""
    if isinstance(err, ssl.SSLCertVerificationError):
        detail = err.verify_message or ""
        return MISNAMED if "mismatch" in detail else _untrusted(tls, detail)
    if err.reason == "WRONG_VERSION_NUMBER":
        return NO_TLS
    if "ALERT" in (err.reason or ""):
        return _refused(tls)
    if isinstance(err, ssl.SSLEOFError):  # the server hung up in the handshake
        return f"{_refused(tls)}, or does not speak TLS on this port"
    return f"TLS handshake failed: {err.reason or err}"
