"""gRPC over TLS and mutual TLS, end to end: the real tritonserver with throwaway
certificates (made by the openssl command), the blocking, asyncio and command-line clients.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest

from clients import (
    AsyncClient,
    Client,
    ClientError,
    RetryPolicy,
    TlsConfig,
    TlsError,
    UnavailableError,
    cli,
)
from clients.tls import explain_tls_failure
from k8s import canary_gate
from server import ServerError, TritonServer
from server.__main__ import parse_args, server_tls
from server.tls import DevCertificates, ServerTls, dev_certificates, tls_args
from tests import tiny_models

X = np.arange(8, dtype=np.float32).reshape(2, 4)
ONE_TRY = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> DevCertificates:
    return dev_certificates(tmp_path_factory.mktemp("tls") / "good")


@pytest.fixture(scope="module")
def wrong(tmp_path_factory) -> DevCertificates:
    """A second CA, unknown to the server and to the clients trusting `certs`."""
    return dev_certificates(tmp_path_factory.mktemp("tls") / "wrong")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tls_repo")
    tiny_models.write_doubler(path)
    return path


def _server(repo: Path, certs: DevCertificates, mutual: bool) -> Iterator[TritonServer]:
    tls = ServerTls(certs.server_cert, certs.server_key, certs.ca, mutual=mutual)
    with TritonServer(repo, tls=tls, exit_timeout_secs=5) as server:
        yield server


@pytest.fixture(scope="module")
def tls_server(repo, certs) -> Iterator[TritonServer]:
    yield from _server(repo, certs, mutual=False)


@pytest.fixture(scope="module")
def mtls_server(repo, certs) -> Iterator[TritonServer]:
    yield from _server(repo, certs, mutual=True)


class TlsTerminator:
    """Terminates TLS in front of a plain-text port, as the Gateway's HTTPS listener does
    for Triton's HTTP (`mutual`: it demands a client certificate from the CA)."""

    def __init__(self, backend: str, certs: DevCertificates, mutual: bool = False) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs.server_cert, certs.server_key)
        if mutual:
            self.context.load_verify_locations(certs.ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        host, port = backend.rsplit(":", 1)
        self.backend = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(conn, server_side=True)
        except OSError:  # a refused handshake
            conn.close()
            return
        upstream = socket.create_connection(self.backend)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def doubled(client: Client) -> np.ndarray:
    return client.infer("doubler", {"x": X}).outputs["y"]


# -- pure parts -------------------------------------------------------------------------


def test_tls_args_are_tritonservers_flags(tmp_path):
    tls = ServerTls(tmp_path / "s.crt", tmp_path / "s.key", tmp_path / "ca.crt", mutual=True)
    assert tls_args(tls) == [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={tmp_path / 's.crt'}",
        f"--grpc-server-key={tmp_path / 's.key'}",
        f"--grpc-root-cert={tmp_path / 'ca.crt'}",
        "--grpc-use-ssl-mutual=true",
    ]
    assert tls_args(ServerTls(tmp_path / "s.crt", tmp_path / "s.key"))[3:] == []
    with pytest.raises(ValueError, match="mutual TLS needs the CA"):
        ServerTls(tmp_path / "s.crt", tmp_path / "s.key", mutual=True)


def test_server_command_line_checks_tls_options(certs):
    args = parse_args(["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)])
    assert server_tls(args) == ServerTls(certs.server_cert, certs.server_key)
    assert server_tls(parse_args([])) is None
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        server_tls(parse_args(["--tls-cert", str(certs.server_cert)]))
    with pytest.raises(ValueError, match="need --tls-cert and --tls-key"):
        server_tls(parse_args(["--tls-mutual"]))


def test_missing_tls_files_stop_the_start(repo, tmp_path):
    tls = ServerTls(tmp_path / "absent.crt", tmp_path / "absent.key")
    with pytest.raises(ServerError, match="TLS files not found: .*absent.crt"):
        TritonServer(repo, tls=tls).start()


def test_client_tls_settings_are_checked(certs, tmp_path):
    with pytest.raises(ValueError, match="certificate and its key go together"):
        TlsConfig(ca=certs.ca, cert=certs.client_cert)
    with pytest.raises(ValueError, match="TLS CA bundle .*nope.pem is not a file"):
        TlsConfig(ca=tmp_path / "nope.pem")
    with pytest.raises(ValueError, match="server name .* works over gRPC only"):
        Client("localhost:8000", protocol="http", tls=TlsConfig(certs.ca, server_name="a.b"))
    args = cli.build_parser().parse_args(["models", "--tls-ca", str(certs.ca)])
    with pytest.raises(ValueError, match="need --tls"):
        cli.client_options(args)
    args = cli.build_parser().parse_args(["models", "--tls", "--tls-ca", str(certs.ca)])
    assert cli.client_options(args)["tls"] == TlsConfig(ca=str(certs.ca))


def test_grpc_connection_errors_unrelated_to_tls_are_left_alone():
    refused = "failed to connect to all addresses; last error: UNKNOWN: Connection refused"
    assert explain_tls_failure(refused, None) is None
    assert explain_tls_failure(refused, TlsConfig()) is None
    assert explain_tls_failure("Deadline Exceeded", TlsConfig()) is None


# -- the real server ----------------------------------------------------------------------


def test_tls_clients_get_answers(tls_server, certs):
    with Client(tls_server.grpc_url, tls=TlsConfig(ca=certs.ca)) as client:
        np.testing.assert_allclose(doubled(client), 2 * X)
        assert client.health()[0]["ready"] is True
    # The certificate names localhost too.
    url = tls_server.grpc_url.replace("127.0.0.1", "localhost")
    with Client(url, tls=TlsConfig(ca=certs.ca)) as client:
        np.testing.assert_allclose(doubled(client), 2 * X)

    async def call() -> np.ndarray:
        async with AsyncClient(tls_server.grpc_url, tls=TlsConfig(ca=certs.ca)) as client:
            return (await client.infer("doubler", {"x": X})).outputs["y"]

    np.testing.assert_allclose(asyncio.run(call()), 2 * X)


def test_plain_text_client_is_refused_and_told_about_tls(tls_server):
    with (
        Client(tls_server.grpc_url, retry=ONE_TRY) as client,
        pytest.raises(UnavailableError, match="it probably requires TLS") as caught,
    ):
        doubled(client)
    assert "last error" not in str(caught.value)


def test_wrong_ca_fails_with_a_tls_error_and_no_retries(tls_server, wrong):
    with (
        Client(tls_server.grpc_url, tls=TlsConfig(ca=wrong.ca)) as client,
        pytest.raises(TlsError) as caught,
    ):
        doubled(client)
    message = str(caught.value)
    assert f"not trusted by the CA bundle {wrong.ca}" in message
    assert "give --tls-ca the CA that signed the server's certificate" in message
    assert caught.value.attempts == 1


def test_certificate_for_another_name_fails_with_a_tls_error(tls_server, certs):
    tls = TlsConfig(ca=certs.ca, server_name="grpc.search.shop.internal")
    with (
        Client(tls_server.grpc_url, tls=tls) as client,
        pytest.raises(TlsError, match="does not name the host dialled"),
    ):
        doubled(client)


def test_mutual_tls_answers_only_clients_with_a_certificate_from_its_ca(mtls_server, certs, wrong):
    with (
        Client(mtls_server.grpc_url, tls=TlsConfig(ca=certs.ca)) as client,
        pytest.raises(TlsError, match="requires mutual TLS .*--tls-cert and --tls-key"),
    ):
        doubled(client)
    stranger = TlsConfig(ca=certs.ca, cert=wrong.client_cert, key=wrong.client_key)
    with (
        Client(mtls_server.grpc_url, tls=stranger) as client,
        pytest.raises(TlsError, match="does not accept the client certificate"),
    ):
        doubled(client)
    with (
        Client(mtls_server.grpc_url, retry=ONE_TRY) as client,
        pytest.raises(UnavailableError, match="requires TLS"),
    ):
        doubled(client)
    member = TlsConfig(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    with Client(mtls_server.grpc_url, tls=member) as client:
        np.testing.assert_allclose(doubled(client), 2 * X)


def test_cli_speaks_tls_and_names_a_tls_failure(mtls_server, certs, wrong, capsys):
    url = ["--url", mtls_server.grpc_url, "--json", "--tls"]
    mutual = ["--tls-cert", str(certs.client_cert), "--tls-key", str(certs.client_key)]
    assert cli.main(["models", *url, "--tls-ca", str(certs.ca), *mutual]) == 0
    assert '"name": "doubler"' in capsys.readouterr().out
    assert cli.main(["models", *url, "--tls-ca", str(wrong.ca), *mutual]) == TlsError.exit_code
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {mtls_server.grpc_url}: TLS handshake failed")
    assert "\n" not in error


def test_https_through_a_tls_terminator_and_its_failures(tls_server, certs, wrong):
    """HTTP over TLS to a terminator in front of Triton's plain HTTP (the chart's Gateway)."""
    terminator = TlsTerminator(tls_server.http_url, certs)
    mutual = TlsTerminator(tls_server.http_url, certs, mutual=True)
    member = TlsConfig(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    try:
        for url, tls in ((terminator.url, TlsConfig(ca=certs.ca)), (mutual.url, member)):
            with Client(url, protocol="http", tls=tls) as client:
                np.testing.assert_allclose(doubled(client), 2 * X)

            async def call(url=url, tls=tls) -> np.ndarray:
                async with AsyncClient(url, protocol="http", tls=tls) as client:
                    return (await client.infer("doubler", {"x": X})).outputs["y"]

            np.testing.assert_allclose(asyncio.run(call()), 2 * X)
        # A plain-text port may reset the handshake (UnavailableError, retried as any
        # reset) or close it (TlsError), depending on timing.
        failures = [
            (terminator.url, TlsConfig(ca=wrong.ca), TlsError, "not trusted by the CA bundle"),
            (mutual.url, TlsConfig(ca=certs.ca), TlsError, "requires mutual TLS"),
            (tls_server.http_url, TlsConfig(ca=certs.ca), ClientError, "does not speak TLS"),
        ]
        for url, tls, kind, message in failures:
            with (
                Client(url, protocol="http", tls=tls) as client,
                pytest.raises(kind, match=message),
            ):
                doubled(client)

            async def fail(url=url, tls=tls) -> None:
                async with AsyncClient(url, protocol="http", tls=tls) as client:
                    await client.infer("doubler", {"x": X})

            with pytest.raises(kind, match=message):
                asyncio.run(fail())
    finally:
        terminator.close()
        mutual.close()


def test_canary_gate_reads_https_urls_and_names_a_tls_failure(tls_server, certs, wrong, capsys):
    """The gate through TLS terminators in front of Triton's metrics and HTTP ports."""
    metrics = TlsTerminator(urllib.parse.urlsplit(tls_server.metrics_url).netloc, certs)
    infer = TlsTerminator(tls_server.http_url, certs, mutual=True)
    gate = ["--model", "doubler", "--window", "0.1", "--min-requests", "1000"]
    metrics_urls = [f"https://{metrics.url}/metrics"] * 2
    try:
        argv = [*gate, "--stable-metrics", metrics_urls[0], "--canary-metrics", metrics_urls[1]]
        assert canary_gate.main([*argv, "--tls-ca", str(certs.ca)]) == 3  # read; too few calls
        assert "decision: hold" in capsys.readouterr().out
        assert canary_gate.main([*argv, "--tls-ca", str(wrong.ca)]) == 1
        assert "--tls-ca must name the CA" in capsys.readouterr().err
        client = canary_gate.tls_context(certs.ca, certs.client_cert, certs.client_key)
        # The doubler is no search model: the gate got as far as reading its metadata.
        with pytest.raises(canary_gate.GateError, match="has no input 'query'"):
            canary_gate.SearchClient(f"https://{infer.url}", "doubler", 10, client)
        with pytest.raises(canary_gate.GateError, match="TLS with https://"):
            canary_gate.SearchClient(
                f"https://{infer.url}", "doubler", 10, canary_gate.tls_context(certs.ca)
            )
    finally:
        metrics.close()
        infer.close()
