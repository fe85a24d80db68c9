"""`make demo`: build the repository if missing, serve it locally, answer real calls.

Runs five logged search queries (as users typed them, typos included) and five
recommendations (four known users and one the model has never seen) through
the real tritonserver over gRPC, and prints each result as a table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from clients.client import Client
from clients.results import Result
from server import TritonServer

UNKNOWN_USER = 999_999_999


def table(catalog: pd.DataFrame, result: Result) -> str:
    item_ids = [item.item_id for item in result.items]
    scores = [item.score for item in result.items]
    rows = catalog.reindex(item_ids)
    shown = pd.DataFrame(
        {
            "title": rows["title"].str.slice(0, 60).to_numpy(),
            "category": rows["category"].to_numpy(),
            "price": rows["price"].map(lambda p: "" if pd.isna(p) else f"{p:.2f}").to_numpy(),
            "score": [f"{s:.3f}" for s in scores],
        },
        index=pd.Index(item_ids, name="item_id"),
    )
    return shown.to_string()


def ensure_repository(repo: Path) -> None:
    if (repo / "search").is_dir():
        print(f"using the model repository in {repo}")
        return
    print(f"building the model repository into {repo} (a few minutes on 2 cores) ...")
    subprocess.run([sys.executable, "-m", "builders", "build", "--out", str(repo)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.demo")
    parser.add_argument("--repo", type=Path, default=Path("model_repository"))
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args(argv)
    ensure_repository(args.repo)

    latest = max(int(p.name) for p in (args.repo / "search").iterdir() if p.name.isdigit())
    catalog = pd.read_parquet(args.repo / "search" / str(latest) / "catalog.parquet")
    catalog = catalog.set_index("item_id")
    from builders.data import load_dataset

    dataset = load_dataset("synthetic")
    queries = dataset.sample_queries(5, seed=1)
    users = [int(u) for u in dataset.sample_user_ids(4, seed=1)] + [UNKNOWN_USER]

    print("starting tritonserver ...")
    started = time.perf_counter()
    with TritonServer(args.repo, http_port=0, grpc_port=0, metrics_port=0) as server:
        print(f"ready in {time.perf_counter() - started:.1f} s at gRPC {server.grpc_url}\n")
        with Client(server.grpc_url) as client:
            client.verify()
            for query in queries:
                result = client.search(query, k=args.k)
                print(f'search "{query}"\n{table(catalog, result)}\n')
            for user in users:
                result = client.recommend(user, k=args.k)
                known = "" if user != UNKNOWN_USER else " (never seen: popularity path)"
                print(f"recommend for user {user}{known}\n{table(catalog, result)}\n")
    print("server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
