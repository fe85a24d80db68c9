"""`python -m builders build ...`: write the versioned model repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builders import names, profiles


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m builders")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build models into a repository")
    build.add_argument("--out", type=Path, default=Path("model_repository"), help="%(default)s")
    build.add_argument(
        "--dataset", default="synthetic", choices=["synthetic", "movielens-100k", "files"]
    )
    build.add_argument("--catalog", type=Path, help="--dataset files: the catalog CSV/Parquet")
    build.add_argument("--interactions", type=Path, help="--dataset files: the event log")
    build.add_argument("--n-items", type=int, help="--dataset synthetic: catalog size")
    build.add_argument("--n-users", type=int, help="--dataset synthetic: number of users")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--profile", choices=profiles.PROFILES, default="cpu")
    version = build.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, help="write this version (refused if it exists)")
    version.add_argument(
        "--next", action="store_true", help="write the next free version (the default)"
    )
    build.add_argument(
        "--only",
        default="",
        help=f"comma-separated models to build (default: all): {', '.join(names.ALL_MODELS)}",
    )
    build.add_argument("--num-candidates", type=int, default=100)
    build.add_argument("--max-length", type=int, default=32, help="query tokens")
    build.add_argument(
        "--encoder",
        choices=[names.TEXT_ENCODER, names.TEXT_ENCODER_INT8],
        default=names.TEXT_ENCODER,
        help="the encoder the search pipeline and index use",
    )
    return parser.parse_args(argv)


def dataset_params(args: argparse.Namespace) -> dict:
    if args.dataset == "files":
        if args.catalog is None:
            raise ValueError("--dataset files needs --catalog (and optionally --interactions)")
        return {"catalog": args.catalog, "interactions": args.interactions}
    if args.dataset == "synthetic":
        params = {"seed": args.seed}
        if args.n_items:
            params["n_items"] = args.n_items
        if args.n_users:
            params["n_users"] = args.n_users
        return params
    return {}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from builders.build import BuildOptions, build
    from builders.data import DataValidationError, load_dataset
    from builders.repository import RepositoryError

    try:
        options = BuildOptions(
            repo=args.out,
            profile=args.profile,
            version=args.version,
            only=tuple(m.strip() for m in args.only.split(",") if m.strip()),
            num_candidates=args.num_candidates,
            max_length=args.max_length,
            encoder=args.encoder,
            seed=args.seed,
        )
        dataset = load_dataset(args.dataset, **dataset_params(args))
        context = build(options, dataset)
    except (ValueError, RepositoryError, DataValidationError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"built {', '.join(context.built)} as version {context.version} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
