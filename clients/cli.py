"""`python -m clients` (also the `ecommerce-client` command): search, recommend, health,
models and batch scoring against a running Triton.

Tables by default, `--json` for scripts. Errors print one line on stderr and
exit non-zero: 2 bad input, 3 unavailable, 4 deadline exceeded, 5 the served
model differs from the contract, 6 model or version not found, 7 the server is
overloaded (it shed the call, retries included: try again later), 8 the TLS
handshake failed (untrusted or misnamed certificate, or a refused client
certificate), 1 anything else the server answered with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from builders import names
from builders.pseudonyms import key_fingerprint, read_key
from clients.aio import AsyncClient
from clients.batch import KINDS, Progress, score_file
from clients.client import Client
from clients.core import DEFAULT_PORTS, PROTOCOLS
from clients.errors import ClientError, UnavailableError
from clients.formatting import result_table, rows_table
from clients.routing import Route, parse_split
from clients.tls import TlsConfig

USAGE_ERROR = 2
INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help="host:port, or several comma-separated for client-side round-robin "
        "(default localhost:8001 for grpc, localhost:8000 for http)",
    )
    common.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    common.add_argument(
        "--timeout", type=float, default=10.0, help="deadline per call in seconds, retries included"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tls = common.add_argument_group("TLS (gRPC to Triton; HTTP to a TLS terminator: the Gateway)")
    tls.add_argument("--tls", action="store_true", help="call the server over TLS")
    tls.add_argument("--tls-ca", help="PEM bundle of the CAs to trust (default: the system's)")
    tls.add_argument("--tls-cert", help="client certificate chain (PEM), for mutual TLS")
    tls.add_argument("--tls-key", help="the client certificate's private key (PEM)")
    tls.add_argument(
        "--tls-server-name",
        help="name the server's certificate must carry, when it differs from the host in --url",
    )

    routed = argparse.ArgumentParser(add_help=False)
    routed.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    routed.add_argument("--model-version", type=int, help="ask this release of the pipeline")
    routed.add_argument(
        "--split", help="canary split between releases, RELEASE:WEIGHT,... (e.g. 1:90,2:10)"
    )
    routed.add_argument(
        "--sticky", action="store_true", help="with --split: one release per user id"
    )
    routed.add_argument(
        "--catalog", help="catalog file (CSV or Parquet, e.g. <repo>/search/<v>/catalog.parquet)"
    )
    routed.add_argument(
        "--user-key-file",
        help="for a build made with --pseudonymise-users: the file holding its key; user ids "
        "are hashed with it before they are sent (default: the USER_ID_KEY environment "
        "variable, if set)",
    )

    parser = argparse.ArgumentParser(
        prog="python -m clients",
        description="Call the search and recommend pipelines on a Triton server.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    search = commands.add_parser("search", parents=[common, routed], help="search the catalog")
    search.add_argument("query")
    search.add_argument("--user", type=int, help="personalise for this user id")
    recommend = commands.add_parser(
        "recommend", parents=[common, routed], help="recommend items to a user"
    )
    recommend.add_argument("--user", type=int, required=True)
    commands.add_parser("health", parents=[common], help="liveness and readiness of the endpoints")
    commands.add_parser("models", parents=[common], help="models and versions, ready or not")
    batch = commands.add_parser(
        "batch", parents=[common, routed], help="score a file of queries or user ids"
    )
    batch.add_argument("kind", choices=KINDS)
    batch.add_argument("input", help="one query (optionally TAB user id) or one user id per line")
    batch.add_argument("-o", "--output", required=True, help="JSON Lines file to write")
    batch.add_argument("--concurrency", type=int, default=8, help="calls in flight (default 8)")
    fingerprint = commands.add_parser(
        "key-fingerprint",
        help="the fingerprint of the user-id key (compare it with user_ids.key_fingerprint in "
        "the release's manifest.json)",
    )
    fingerprint.add_argument("--user-key-file", help="default: the USER_ID_KEY variable")
    return parser


def client_options(args: argparse.Namespace, model: str | None = None) -> dict:
    """Client keyword arguments from the command line (raises ValueError)."""
    options = {
        "urls": args.url or f"localhost:{DEFAULT_PORTS[args.protocol]}",
        "protocol": args.protocol,
        "timeout": args.timeout,
    }
    tls = tls_config(args)
    if tls is not None:
        options["tls"] = tls
    if model is None:
        return options
    if args.model_version is not None and args.split:
        raise ValueError("--model-version and --split exclude each other")
    if args.sticky and not args.split:
        raise ValueError("--sticky needs --split")
    if args.model_version is not None:
        options["routes"] = {model: Route.pinned(args.model_version)}
    elif args.split:
        options["routes"] = {model: Route.split(parse_split(args.split), sticky=args.sticky)}
    options["catalog"] = args.catalog
    options["user_key"] = read_key(args.user_key_file)
    return options


def tls_config(args: argparse.Namespace) -> TlsConfig | None:
    """The TLS settings of the command line (raises ValueError)."""
    given = [args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name]
    if not args.tls:
        if any(given):
            raise ValueError("--tls-ca, --tls-cert, --tls-key and --tls-server-name need --tls")
        return None
    return TlsConfig(*given)


def _print(args, data, table: str) -> None:
    print(json.dumps(data, ensure_ascii=False) if args.json else table)


def run_call(args: argparse.Namespace, model: str) -> int:
    with Client(**client_options(args, model)) as client:
        client.verify([model])
        if model == names.SEARCH:
            result = client.search(args.query, args.user, args.k)
        else:
            result = client.recommend(args.user, args.k)
    _print(args, result.to_dict(), result_table(result))
    return 0


def run_health(args: argparse.Namespace) -> int:
    with Client(**client_options(args)) as client:
        rows = client.health()
    columns = ["endpoint", "live", "ready", "server_version", "error"]
    _print(args, rows, rows_table(rows, columns))
    down = [row["endpoint"] for row in rows if not row["ready"]]
    if down:
        message = f"{len(down)} of {len(rows)} endpoint(s) not ready: {', '.join(down)}"
        raise UnavailableError(message)
    return 0


def run_models(args: argparse.Namespace) -> int:
    with Client(**client_options(args)) as client:
        rows = sorted(client.models(), key=lambda r: (r["name"], r["version"]))
    _print(args, rows, rows_table(rows, ["name", "version", "state", "reason"]))
    return 0


def run_batch(args: argparse.Namespace) -> int:
    model = names.SEARCH if args.kind == "search" else names.RECOMMEND
    options = client_options(args, model)

    def report(progress: Progress) -> None:
        print(progress.line(), file=sys.stderr, flush=True)

    async def score() -> Progress:
        async with AsyncClient(**options) as client:
            await client.verify([model])
            return await score_file(
                client,
                args.kind,
                args.input,
                args.output,
                k=args.k,
                concurrency=args.concurrency,
                progress=report,
            )

    summary = asyncio.run(score())
    message = f"wrote {summary.done} records ({summary.errors} errors) to {args.output}"
    _print(args, vars(summary), message)
    return 0


def run_key_fingerprint(args: argparse.Namespace) -> int:
    key = read_key(args.user_key_file)
    if key is None:
        raise ValueError("no user-id key: give --user-key-file or set USER_ID_KEY")
    print(key_fingerprint(key))
    return 0


COMMANDS = {
    "search": lambda args: run_call(args, names.SEARCH),
    "recommend": lambda args: run_call(args, names.RECOMMEND),
    "health": run_health,
    "models": run_models,
    "batch": run_batch,
    "key-fingerprint": run_key_fingerprint,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except (ValueError, OSError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return INTERRUPTED
