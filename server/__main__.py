"""`python -m server`: run the local tritonserver in the foreground.

Prints the endpoints once the server is ready, then follows its log until
Ctrl-C (or SIGTERM), which stops the server and its backend stubs cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from server.launcher import MODEL_CONTROL_MODES, ServerError, TritonServer
from server.tls import ServerTls


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Run the real tritonserver 2.51 on loopback with the CPU backends.",
    )
    parser.add_argument("--model-repository", default="model_repository", help="%(default)s")
    parser.add_argument("--model-control", choices=MODEL_CONTROL_MODES, default="none")
    parser.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="with --model-control explicit: load NAME at start-up (repeatable)",
    )
    parser.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--metrics-port", type=int, default=8002, help="0 picks a free port")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument(
        "--response-cache-mb",
        type=int,
        default=0,
        help="Triton's local response cache, for models whose config enables it (0: none)",
    )
    tls = parser.add_argument_group(
        "TLS (gRPC only: Triton's HTTP endpoint has no TLS and stays on loopback)"
    )
    tls.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM)")
    tls.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    tls.add_argument("--tls-client-ca", type=Path, help="CA that signs client certificates (PEM)")
    tls.add_argument(
        "--tls-mutual",
        action="store_true",
        help="mutual TLS: refuse gRPC clients without a certificate signed by --tls-client-ca",
    )
    parser.add_argument(
        "extra_args", nargs="*", metavar="-- TRITON_ARG", help="passed on to tritonserver"
    )
    return parser.parse_args(argv)


def server_tls(args: argparse.Namespace) -> ServerTls | None:
    """The TLS spec the command line asks for (raises ValueError)."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca or args.tls_mutual:
            raise ValueError("--tls-client-ca and --tls-mutual need --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    return ServerTls(args.tls_cert, args.tls_key, args.tls_client_ca, args.tls_mutual)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tls = server_tls(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    server = TritonServer(
        args.model_repository,
        model_control=args.model_control,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        load_models=args.load_model,
        startup_timeout=args.startup_timeout,
        log_verbose=args.log_verbose,
        response_cache_mb=args.response_cache_mb,
        tls=tls,
        extra_args=args.extra_args,
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    print(f"starting tritonserver on {server.model_repository} ...", flush=True)
    try:
        server.start()
        print(server.log_tail(200), flush=True)
        print(
            f"ready: HTTP {server.http_url}  gRPC {server.grpc_url}"
            f"{' (mutual TLS)' if tls and tls.mutual else ' (TLS)' if tls else ''}  "
            f"metrics {server.metrics_url}  (Ctrl-C stops)",
            flush=True,
        )
        with open(server.log_path, errors="replace") as log:
            log.seek(0, 2)
            while server.process.poll() is None:
                line = log.readline()
                if line:
                    print(line, end="", flush=True)
                else:
                    time.sleep(0.2)
        print(f"tritonserver exited with code {server.process.returncode}", file=sys.stderr)
        return 1
    except ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping tritonserver ...", flush=True)
        code = server.stop()
        print(f"stopped (exit code {code})", flush=True)
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
