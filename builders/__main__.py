"""`python -m builders build ...`: write the versioned model repository.

`python -m builders update-index ...`: a new index version with items added / removed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from builders import names, profiles
from builders.data.registry import DEFAULT_DATASET, SOURCES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m builders")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build models into a repository")
    build.add_argument("--out", type=Path, default=Path("model_repository"), help="%(default)s")
    build.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(SOURCES))
    build.add_argument("--catalog", type=Path, help="--dataset files: the catalog CSV/Parquet")
    build.add_argument("--interactions", type=Path, help="--dataset files: the event log")
    build.add_argument(
        "--relevance",
        type=Path,
        help="--dataset files: graded queries (query, item_id, grade) the query encoder's "
        "quality gate judges on (default: the searches of the event log)",
    )
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
        "--length-buckets",
        default="8,16",
        help="widths the query tokenizer pads to below --max-length, e.g. 8,16 "
        "(default %(default)s; empty: always pad to --max-length)",
    )
    build.add_argument(
        "--encoder",
        choices=[names.AUTO_ENCODER, *names.QUERY_ENCODERS],
        default=names.AUTO_ENCODER,
        help="the query encoder search serves (default %(default)s: the fastest variant that "
        "passes the quality gate against the teacher, text_encoder, which always embeds the "
        "items; the teacher when none passes)",
    )
    build.add_argument(
        "--ranker",
        choices=["auto", "dcn", "lambdamart"],
        default="auto",
        help="the rankers: dcn (DCN-v2), lambdamart (LightGBM: LambdaMART for search, binary "
        "for recommend) or auto (both trained on the same groups, each pipeline serving the "
        "better held-out figure: search NDCG@10 on graded queries where the data has them, "
        "recommend AUC; DCN-v2 alone with DP) (default %(default)s)",
    )
    build.add_argument(
        "--slo-ms",
        type=float,
        default=None,
        help="bound every stage's queue for this p99 latency SLO in ms: a request waits at "
        "most half of it in a stage's queue before it is rejected as overload (default: "
        "unbounded queues; Triton 2.51 can stall a bounded stage for up to 500 ms: README, "
        "Building models, Queues)",
    )
    build.add_argument(
        "--index",
        choices=["auto", "exact", "ann"],
        default="auto",
        help="retrieval index: exact MatMul+TopK, FAISS ANN, or auto by catalog size "
        "(ANN from 100,000 items)",
    )
    build.add_argument(
        "--ann-recall-target",
        type=float,
        default=0.99,
        help="recall@100 against exact search the ANN index must reach (%(default)s)",
    )
    build.add_argument(
        "--synonyms",
        type=Path,
        metavar="FILE",
        help="a synonyms file (Solr/Elasticsearch format) the lexical stage expands queries "
        "with; travels in hybrid_retrieval (e.g. --only hybrid_retrieval,search for a new "
        "search release)",
    )
    build.add_argument(
        "--pseudonymise-users",
        action="store_true",
        help="replace raw user ids by keyed hashes (HMAC-SHA-256) before anything is trained "
        "or written; clients must then send ids hashed with the same key",
    )
    build.add_argument(
        "--user-key-file",
        type=Path,
        help="with --pseudonymise-users: the file holding the secret key (default: the "
        "USER_ID_KEY environment variable)",
    )
    private = build.add_argument_group(
        "differential privacy",
        "train the two-tower model and the DCN rankers with DP-SGD, one user's events as the "
        "privacy unit (README: Differentially private training)",
    )
    private.add_argument("--dp-epsilon", type=float, help="the privacy budget epsilon (> 0)")
    private.add_argument(
        "--dp-delta", type=float, help="delta in (0, 1) (default: 1 / training users)"
    )
    private.add_argument(
        "--dp-clip-norm",
        type=float,
        default=1.0,
        help="largest L2 norm of one user's gradient per step (%(default)s)",
    )
    own = build.add_argument_group(
        "own models",
        "a team's own models in place of those the build trains (README: Deploy "
        "your own models); flags take precedence over --models-file",
    )
    own.add_argument(
        "--models-file", type=Path, help="a YAML build file naming the models (builders.own_models)"
    )
    own.add_argument(
        "--encoder-model",
        type=Path,
        metavar="DIR",
        help="a sentence-transformers or BERT-family folder: the teacher query/item encoder",
    )
    for name in ("search", "recommend"):
        own.add_argument(f"--{name}-ranker", type=Path, metavar="FILE", help="ONNX or TorchScript")
        own.add_argument(
            f"--{name}-ranker-features",
            metavar="LIST",
            help=f"the ranking features the {name} ranker's one float32 input `features` "
            "holds, in order, e.g. retrieval_score,lexical_score,log_popularity",
        )
    own.add_argument("--user-tower", type=Path, metavar="FILE", help="ONNX: user_id -> embedding")
    own.add_argument(
        "--item-embeddings",
        type=Path,
        metavar="FILE",
        help="with --user-tower: .npz (item_ids, embeddings) or .parquet (item_id, embedding)",
    )
    update = commands.add_parser(
        "update-index",
        help="a new index version with items added and/or removed, without a rebuild",
    )
    update.add_argument("--repo", type=Path, default=Path("model_repository"), help="%(default)s")
    update.add_argument(
        "--model", default=names.SEARCH_INDEX, choices=[names.SEARCH_INDEX, names.RECOMMEND_INDEX]
    )
    update.add_argument(
        "--add",
        type=Path,
        help="catalog rows of new items (CSV/Parquet: item_id, title, category), embedded "
        "with the encoder version the index depends on (search_index)",
    )
    update.add_argument(
        "--add-embeddings",
        type=Path,
        help="new items' embeddings as .npz with arrays item_ids [n] and embeddings [n, dim]",
    )
    update.add_argument("--remove", type=Path, help="item ids to remove (masked), one a line")
    update.add_argument("--version", type=int, help="the new version (default: latest + 1)")
    update.add_argument("--max-length", type=int, default=32, help="tokens, for --add")
    update.add_argument(
        "--load",
        metavar="URL",
        help="then load the new version into a running tritonserver (explicit model "
        "control) over HTTP, e.g. localhost:8000",
    )
    return parser.parse_args(argv)


def dataset_params(args: argparse.Namespace) -> dict:
    if args.dataset == "files":
        if args.catalog is None:
            raise ValueError("--dataset files needs --catalog (and optionally --interactions)")
        return {
            "catalog": args.catalog,
            "interactions": args.interactions,
            "relevance": args.relevance,
        }
    if args.dataset == "synthetic":
        params = {"seed": args.seed}
        if args.n_items:
            params["n_items"] = args.n_items
        if args.n_users:
            params["n_users"] = args.n_users
        return params
    return {}


def read_ids(path: Path) -> np.ndarray:
    """Item ids, one a line (blank lines and `#` comments skipped)."""
    ids = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids.append(int(text))
        except ValueError:
            raise ValueError(f"{path}:{number}: not an item id: {text!r}") from None
    return np.array(ids, dtype=np.int64)


def new_item_embeddings(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, embeddings) of the items to add, from --add and/or --add-embeddings."""
    ids, vectors = [np.zeros(0, np.int64)], []
    if args.add_embeddings:
        with np.load(args.add_embeddings) as data:
            if not {"item_ids", "embeddings"} <= set(data.files):
                raise ValueError(f"{args.add_embeddings} needs arrays item_ids and embeddings")
            ids.append(data["item_ids"].astype(np.int64))
            vectors.append(data["embeddings"].astype(np.float32))
    if args.add:
        ids_add, vectors_add = embed_new_items(args)
        ids.append(ids_add)
        vectors.append(vectors_add)
    if not vectors:
        return ids[0], None
    return np.concatenate(ids), np.concatenate(vectors)


def embed_new_items(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    from builders import text_encoder
    from builders.build import item_texts, kept_encoder_tokenizer
    from builders.repository import model_versions, read_manifest

    if args.model != names.SEARCH_INDEX:
        raise ValueError(
            "--add embeds titles with the text encoder (search_index); for recommend_index "
            "give the item tower's embeddings with --add-embeddings"
        )
    suffix = args.add.suffix.lower()
    catalog = pd.read_parquet(args.add) if suffix == ".parquet" else pd.read_csv(args.add)
    missing = {"item_id", "title", "category"} - set(catalog.columns)
    if missing:
        raise ValueError(f"{args.add} lacks column(s) {', '.join(sorted(missing))}")
    if catalog.empty:
        raise ValueError(f"{args.add} holds no items")
    versions = model_versions(args.repo, args.model)
    if not versions:
        raise ValueError(f"{args.model} has no version in {args.repo}")
    depends = read_manifest(args.repo, args.model, versions[-1])["depends_on"]
    encoder = next((m for m in names.QUERY_ENCODERS if m in depends), None)
    if encoder is None:
        raise ValueError(f"{args.model} version {versions[-1]} names no text encoder")
    catalog = catalog.sort_values("item_id")
    texts = item_texts(SimpleNamespace(catalog=catalog))
    model = args.repo / encoder / str(depends[encoder]) / "model.onnx"
    kept = kept_encoder_tokenizer(args.repo, depends.get(names.TEXT_ENCODER))
    with text_encoder.source(kept) if kept else contextlib.nullcontext():
        embeddings = text_encoder.embed(model, texts, max_length=args.max_length)
    return catalog.item_id.to_numpy(dtype=np.int64), embeddings


def own_models_of(args: argparse.Namespace):
    """The team's own models the build file and flags name (`builders.own_models`)."""
    from builders import own_models

    own = own_models.load(args.models_file) if args.models_file else own_models.OwnModels()
    flags = {
        "encoder": args.encoder_model,
        "search_ranker": args.search_ranker,
        "search_ranker_features": args.search_ranker_features,
        "recommend_ranker": args.recommend_ranker,
        "recommend_ranker_features": args.recommend_ranker_features,
        "user_tower": args.user_tower,
        "item_embeddings": args.item_embeddings,
    }
    return own_models.with_flags(own, flags)


def update_index_main(args: argparse.Namespace) -> int:
    from builders.ann import RecallError
    from builders.index_stage import update_index
    from builders.repository import RepositoryError

    try:
        add_ids, add_embeddings = new_item_embeddings(args)
        remove_ids = read_ids(args.remove) if args.remove else None
        result = update_index(
            args.repo,
            args.model,
            add_ids=add_ids,
            add_embeddings=add_embeddings,
            remove_ids=remove_ids,
            version=args.version,
        )
    except (ValueError, RepositoryError, RecallError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    update = result.metrics["catalog_update"]
    print(
        f"wrote {args.model} version {result.version}: {update['appended']} appended, "
        f"{update['restored_or_replaced']} restored/replaced, {update['removed']} removed; "
        f"{result.metrics['live_items']:,} live of {result.metrics['items']:,} positions"
    )
    if args.load:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(args.load)
        try:
            client.load_model(args.model)
        finally:
            client.close()
        print(f"loaded {args.model} into the server at {args.load}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "update-index":
        return update_index_main(args)
    from builders.ann import RecallError
    from builders.build import BuildOptions, build
    from builders.data import DataValidationError, load_dataset
    from builders.pseudonyms import read_key
    from builders.repository import RepositoryError
    from builders.runtime.tokenization import parse_buckets

    try:
        if args.user_key_file and not args.pseudonymise_users:
            raise ValueError("--user-key-file is only used with --pseudonymise-users")
        options = BuildOptions(
            repo=args.out,
            profile=args.profile,
            version=args.version,
            only=tuple(m.strip() for m in args.only.split(",") if m.strip()),
            num_candidates=args.num_candidates,
            max_length=args.max_length,
            length_buckets=parse_buckets(args.length_buckets),
            encoder=args.encoder,
            seed=args.seed,
            index=args.index,
            ann_recall_target=args.ann_recall_target,
            slo_ms=args.slo_ms,
            ranker=args.ranker,
            synonyms=args.synonyms,
            pseudonymise_users=args.pseudonymise_users,
            user_key=read_key(args.user_key_file) if args.pseudonymise_users else None,
            own=own_models_of(args),
            dp_epsilon=args.dp_epsilon,
            dp_delta=args.dp_delta,
            dp_clip_norm=args.dp_clip_norm,
        )
        dataset = load_dataset(args.dataset, **dataset_params(args))
        context = build(options, dataset)
    except (
        ValueError,
        RepositoryError,
        DataValidationError,
        FileNotFoundError,
        RecallError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"built {', '.join(context.built)} as version {context.version} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
