"""TLS for Triton's gRPC endpoint, and throwaway certificates to try it with.

`ServerTls` is the typed spec and `tls_args` its `tritonserver` flags (pure). Triton 2.51
has TLS on gRPC only (`--grpc-use-ssl`, `--grpc-use-ssl-mutual`); its HTTP endpoint speaks
plain text, so the launcher keeps HTTP on loopback and the chart terminates TLS for HTTP at
the Gateway.

`python -m server.tls DIR` writes a private CA, a server certificate for localhost and
127.0.0.1 and a client certificate signed by it (the `openssl` command line): enough for
`python -m server --tls-cert ... --tls-key ...` and the clients' `--tls` on one machine.
Never use them beyond it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: What the dev server certificate is valid for (the launcher listens on 127.0.0.1).
LOCAL_NAMES = ("DNS:localhost", "IP:127.0.0.1")
DEV_DAYS = 30


@dataclass(frozen=True)
class ServerTls:
    """gRPC over TLS: the server's certificate chain and key (PEM files). `mutual` also
    demands a client certificate signed by `client_ca`."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    mutual: bool = False

    def __post_init__(self) -> None:
        if self.mutual and self.client_ca is None:
            raise ValueError("mutual TLS needs the CA that signs the client certificates")

    def missing_files(self) -> list[str]:
        """The files of this spec that do not exist (checked before the server starts)."""
        files = [self.cert, self.key, *([self.client_ca] if self.client_ca else [])]
        return [str(path) for path in files if not Path(path).is_file()]


def tls_args(tls: ServerTls) -> list[str]:
    """The `tritonserver` flags for `tls`."""
    argv = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={Path(tls.cert).resolve()}",
        f"--grpc-server-key={Path(tls.key).resolve()}",
    ]
    if tls.client_ca is not None:
        argv.append(f"--grpc-root-cert={Path(tls.client_ca).resolve()}")
    if tls.mutual:
        argv.append("--grpc-use-ssl-mutual=true")
    return argv


@dataclass(frozen=True)
class DevCertificates:
    """The files `dev_certificates` writes."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError(
            "making certificates needs the openssl command (apt-get install openssl)"
        )
    result = subprocess.run([openssl, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _new_key(*args: str) -> tuple[str, ...]:
    """`openssl req` arguments for a new unencrypted EC P-256 key."""
    return ("req", *args, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def _signed(
    folder: Path, name: str, subject: str, extensions: str, ca: Path, ca_key: Path
) -> tuple[Path, Path]:
    """`folder/<name>.crt` and `.key`: a new key and a certificate signed by the CA."""
    key, csr, cert, ext = (
        folder / f"{name}{suffix}" for suffix in (".key", ".csr", ".crt", ".ext")
    )
    _openssl(*_new_key("-new"), "-keyout", str(key), "-subj", subject, "-out", str(csr))
    ext.write_text(extensions)
    signing = ("-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", str(DEV_DAYS))
    _openssl("x509", "-req", "-in", str(csr), *signing, "-extfile", str(ext), "-out", str(cert))
    csr.unlink()
    ext.unlink()
    return cert, key


def dev_certificates(folder: Path, names: tuple[str, ...] = LOCAL_NAMES) -> DevCertificates:
    """A new private CA in `folder`, a server certificate for `names` and a client
    certificate, all signed by it (EC P-256, valid `DEV_DAYS` days)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    ca_request = _new_key("-x509", "-days", str(DEV_DAYS), "-subj", "/CN=triton-ecommerce dev CA")
    _openssl(*ca_request, "-keyout", str(ca_key), "-out", str(ca))
    server_ext = f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth\n"
    server_cert, server_key = _signed(folder, "server", "/CN=localhost", server_ext, ca, ca_key)
    client_ext = "extendedKeyUsage=clientAuth\n"
    client_cert, client_key = _signed(folder, "client", "/CN=client", client_ext, ca, ca_key)
    for key in (ca_key, server_key, client_key):
        key.chmod(0o600)
    return DevCertificates(ca, server_cert, server_key, client_cert, client_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.tls",
        description="Write a throwaway CA, a localhost server certificate and a client "
        "certificate (for trying TLS on one machine only).",
    )
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    try:
        certs = dev_certificates(args.folder)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for label, path in vars(certs).items():
        print(f"{label:12} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
