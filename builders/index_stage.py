"""The retrieval index stage: exact or ANN by catalog size, and catalog updates.

`write_index` is what the builder calls for `search_index` and `recommend_index`: below
`ANN_MIN_ITEMS` items (or with `--index exact`) it writes the exact ONNX MatMul + TopK
(`builders.retrieval`); from there (or with `--index ann`) a FAISS IVF index tuned to
recall@100 >= 0.99 of exact search (`builders.ann`), served by a Python model
(`builders/runtime/ann_index*.py`) with the same tensor contract. Versions of one model
share its config, so one model keeps one kind: `auto` keeps the kind a repository already
serves for that model (and says so); asking for the other kind explicitly is refused.

`update_index` makes a new index version from the latest one without retraining or
re-embedding the catalog: removed items are masked (taken out of the index, so never
returned), new items are appended at positions after the last one, and `item_ids.npy`
(catalog position -> item id) travels with every index version. Positions of existing
items never move, so the `ranking_features` tables, the rankers' item vocabulary and
`top_k`'s `item_ids.npy`, all indexed by catalog position, stay right for them. Appended
positions are unknown to those stages until they are rebuilt from the extended catalog,
so an update that appends items records a new data fingerprint: a pipeline release built
from the old data refuses to pin it (`check_data_fingerprints`), while a removal-only
update keeps the fingerprint and can be pinned at once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builders import names, profiles
from builders.repository import (
    CONFIG,
    RepositoryError,
    model_versions,
    read_manifest,
    set_served_versions,
    write_version,
)
from builders.retrieval import index_graph, index_items, save_index
from builders.specs import ModelSpec, parse_pbtxt, with_slo

#: From this many items `--index auto` builds the ANN index (below it, exact search).
ANN_MIN_ITEMS = 100_000
INDEX_CHOICES = ("auto", "exact", "ann")
ITEM_IDS_FILE = "item_ids.npy"
RUNTIME = Path(__file__).resolve().parent / "runtime"
KIND_OF_BACKEND = {"onnxruntime": "exact", "python": "ann"}
#: Probe queries for tuning and for the held-out recall (see `ann.probe_queries`).
TUNE_QUERIES = 500
HELDOUT_QUERIES = 1000


def existing_kind(repo: Path, model: str) -> str | None:
    """The kind (exact / ann) a repository's model already is, from its config."""
    config = Path(repo) / model / CONFIG
    if not config.exists():
        return None
    return KIND_OF_BACKEND.get(parse_pbtxt(config.read_text()).get("backend", ""))


def choose_kind(n_items: int, requested: str = "auto", existing: str | None = None) -> str:
    """exact or ann for a catalog of `n_items` (see the module docstring)."""
    if n_items < 1:
        raise ValueError("the catalog is empty: an index needs at least one item")
    if requested not in INDEX_CHOICES:
        raise ValueError(f"index must be one of {', '.join(INDEX_CHOICES)}, got {requested!r}")
    if requested == "auto":
        by_size = "ann" if n_items >= ANN_MIN_ITEMS else "exact"
        return existing or by_size
    if existing and existing != requested:
        raise RepositoryError(
            f"the repository's index is {existing} and its versions share one config; "
            f"a {requested} version cannot join them: build into a new repository, or "
            f"remove the model's folder first"
        )
    return requested


def spec_for(kind: str, name: str, dim: int, num_candidates: int) -> ModelSpec:
    if kind == "ann":
        return names.ann_index_spec(name, dim, num_candidates)
    return names.index_spec(name, dim, num_candidates)


@dataclass
class IndexVersion:
    """What an index version is made of, before it is written."""

    kind: str
    spec: ModelSpec
    metrics: dict
    populate: object  # Callable[[Path], None]


def prepare_index(
    name: str,
    embeddings: np.ndarray,
    item_ids: np.ndarray,
    num_candidates: int,
    *,
    kind: str,
    recall_target: float = 0.99,
    seed: int = 0,
    progress=lambda message: None,
) -> IndexVersion:
    """Build (and for ANN, tune) an index over `embeddings` (row = catalog position)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError("the catalog is empty: an index needs at least one item")
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if item_ids.shape != (len(embeddings),):
        raise ValueError(f"{len(item_ids)} item ids for {len(embeddings)} embeddings")
    candidates = min(num_candidates, len(embeddings))
    spec = spec_for(kind, name, embeddings.shape[1], candidates)
    metrics: dict = {"items": len(embeddings), "num_candidates": candidates, "index": kind}
    if kind == "exact":

        def populate(folder: Path) -> None:
            save_index(index_graph(embeddings, candidates), folder)
            np.save(folder / ITEM_IDS_FILE, item_ids)

        return IndexVersion(kind, spec, metrics, populate)

    from builders import ann

    progress(f"training and tuning an ANN index over {len(embeddings):,} items")
    tuned = ann.tune(
        embeddings,
        ann.probe_queries(embeddings, TUNE_QUERIES, seed),
        ann.probe_queries(embeddings, HELDOUT_QUERIES, seed + 1),
        k=max(ann.RECALL_K, candidates),
        target=recall_target,
        seed=seed,
    )
    metrics.update(ann=tuned.params.to_dict(), recall=tuned.metrics)
    metrics["recall_at_100"] = tuned.metrics["recall_at_k"]
    progress(
        f"{tuned.params.kind} nprobe {tuned.params.nprobe}: held-out recall@"
        f"{tuned.metrics['recall_k']} {tuned.metrics['recall_at_k']:.4f}"
    )

    def populate(folder: Path) -> None:
        write_ann_files(folder, tuned.index, tuned.params.to_dict(), item_ids)

    return IndexVersion(kind, spec, metrics, populate)


def write_ann_files(folder: Path, index, params: dict, item_ids: np.ndarray) -> None:
    import faiss

    for module in ("ann_index", "stage_glue"):
        shutil.copy2(RUNTIME / f"{module}.py", folder / f"{module}.py")
    shutil.copy2(RUNTIME / "ann_index_model.py", folder / "model.py")
    faiss.write_index(index, str(folder / "index.faiss"))
    (folder / "ann.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    np.save(folder / ITEM_IDS_FILE, np.asarray(item_ids, dtype=np.int64))


def write_index(
    ctx, name: str, embeddings: np.ndarray, item_ids: np.ndarray, depends_on: dict, progress
):
    """The builder's index step (`ctx`: a `builders.build.BuildContext`; `progress`: its
    message printer)."""
    options = ctx.options
    requested = getattr(options, "index", "auto")
    existing = existing_kind(ctx.repo, name)
    kind = choose_kind(len(embeddings), requested, existing)
    by_size = "ann" if len(embeddings) >= ANN_MIN_ITEMS else "exact"
    if requested == "auto" and kind != by_size:
        progress(
            f"{name}: {len(embeddings):,} items would take the {by_size} index, but the "
            f"repository's {name} is {kind} (one config for all versions): keeping {kind}"
        )
    version = prepare_index(
        name,
        embeddings,
        item_ids,
        options.num_candidates,
        kind=kind,
        recall_target=getattr(options, "ann_recall_target", 0.99),
        seed=options.seed,
        progress=progress,
    )
    return ctx.write(version.spec, version.populate, depends_on=depends_on, metrics=version.metrics)


def write_standalone(
    repo: Path,
    name: str,
    embeddings: np.ndarray,
    item_ids: np.ndarray,
    *,
    kind: str = "auto",
    num_candidates: int = 100,
    version: int = 1,
    recall_target: float = 0.99,
    seed: int = 0,
    dataset: dict | None = None,
    slo_ms: float | None = None,
) -> tuple[Path, dict]:
    """An index version written without a full build (benchmarks, tests, an external
    embedding job): the same files, config and manifest as the builder's, its queue
    bounded for `slo_ms` where given, as a build's (`specs.with_slo`)."""
    kind = choose_kind(len(embeddings), kind, existing_kind(repo, name))
    prepared = prepare_index(
        name,
        embeddings,
        item_ids,
        num_candidates,
        kind=kind,
        recall_target=recall_target,
        seed=seed,
    )
    manifest = {
        "dataset": dataset or {"name": "external", "fingerprint": "", "params": {}},
        "profile": "cpu",
        "depends_on": {},
        "metrics": prepared.metrics,
        "parity": {},
    }
    spec = with_slo(prepared.spec, slo_ms)
    gpu = profiles.adapt(spec, "gpu")
    path = write_version(
        repo,
        spec,
        version,
        prepared.populate,
        manifest,
        named_configs={"gpu": gpu} if gpu != spec else {},
    )
    return path, prepared.metrics


# -- catalog updates --------------------------------------------------------------------
@dataclass
class UpdateResult:
    path: Path
    version: int
    metrics: dict


def served_versions(repo: Path, model: str) -> list[int]:
    """The versions a model's config serves now."""
    config = parse_pbtxt((Path(repo) / model / CONFIG).read_text())
    policy = config.get("version_policy", {"latest": {"num_versions": 1}})
    versions = model_versions(repo, model)
    if "specific" in policy:
        return sorted(int(v) for v in policy["specific"]["versions"])
    if "all" in policy:
        return versions
    return versions[-int(policy.get("latest", {}).get("num_versions", 1)) :]


def update_index(
    repo: Path,
    model: str,
    *,
    add_ids: np.ndarray | None = None,
    add_embeddings: np.ndarray | None = None,
    remove_ids: np.ndarray | None = None,
    version: int | None = None,
    recall_target: float = 0.99,
    seed: int = 0,
) -> UpdateResult:
    """A new version of `model` from its latest one: `remove_ids` masked, `add_ids` (with
    `add_embeddings`, made by the same encoder / item tower the index depends on) appended.

    An id both removed and added is replaced in place (a new embedding, same position); an
    added id that an earlier update removed comes back at its old position. The new version
    is added to the served versions, so a running server in explicit mode picks it up with
    `load_model(model)` while the versions pinned by pipeline releases keep serving.
    """
    repo = Path(repo)
    versions = model_versions(repo, model)
    if not versions:
        raise RepositoryError(f"{model} has no version in {repo} to update")
    base = versions[-1]
    base_dir = repo / model / str(base)
    if not (base_dir / ITEM_IDS_FILE).exists():
        raise RepositoryError(
            f"{model} version {base} has no {ITEM_IDS_FILE} (built before catalog updates "
            "existed); rebuild it once"
        )
    item_ids = np.load(base_dir / ITEM_IDS_FILE).astype(np.int64)
    positions, vectors = index_items(base_dir)
    dim = vectors.shape[1]
    add_ids = np.zeros(0, np.int64) if add_ids is None else np.asarray(add_ids, np.int64)
    add_embeddings = (
        np.zeros((0, dim), np.float32)
        if add_embeddings is None
        else np.asarray(add_embeddings, dtype=np.float32)
    )
    remove_ids = np.zeros(0, np.int64) if remove_ids is None else np.asarray(remove_ids, np.int64)
    if add_embeddings.ndim != 2 or add_embeddings.shape[0] != len(add_ids):
        raise ValueError(f"{len(add_ids)} added item ids need as many embedding rows")
    if len(add_ids) and add_embeddings.shape[1] != dim:
        raise ValueError(f"added embeddings have dim {add_embeddings.shape[1]}, the index {dim}")
    if not np.isfinite(add_embeddings).all():
        raise ValueError("added embeddings must be finite")
    for label, ids in (("added", add_ids), ("removed", remove_ids)):
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"{label} item ids must be unique")
    if not len(add_ids) and not len(remove_ids):
        raise ValueError("nothing to update: give items to add and/or to remove")

    position_of = {int(item): pos for pos, item in enumerate(item_ids)}
    live = np.zeros(len(item_ids), dtype=bool)
    live[positions] = True
    unknown = [int(i) for i in remove_ids if int(i) not in position_of]
    if unknown:
        raise ValueError(
            f"{len(unknown)} item id(s) to remove are not in {model} version {base}: {unknown[:5]}"
        )
    removed = np.array([position_of[int(i)] for i in remove_ids], dtype=np.int64)
    already_masked = int((~live[removed]).sum()) if len(removed) else 0
    live_after = live.copy()
    live_after[removed] = False
    new_positions, appended_ids = [], []
    for item in add_ids.tolist():
        pos = position_of.get(item)
        if pos is None:
            pos = len(item_ids) + len(appended_ids)
            appended_ids.append(item)
        elif live_after[pos]:
            raise ValueError(
                f"item id {item} is already in {model} version {base}; remove it in the same "
                "update to replace its embedding"
            )
        new_positions.append(pos)
    new_positions = np.array(new_positions, dtype=np.int64)
    final_ids = np.concatenate([item_ids, np.array(appended_ids, dtype=np.int64)])
    live_count = int(live_after.sum()) + len(new_positions)
    if live_count == 0:
        raise ValueError(f"the update would leave {model} with an empty catalog; refused")

    base_config = parse_pbtxt((repo / model / CONFIG).read_text())
    outputs = {o["name"]: o for o in base_config["output"]}
    num_candidates = int(outputs["candidate_indexes"]["dims"][-1])
    kind = KIND_OF_BACKEND[base_config["backend"]]
    keep = live_after[positions]
    metrics: dict = {
        "items": len(final_ids),
        "live_items": live_count,
        "num_candidates": num_candidates,
        "index": kind,
    }
    if kind == "exact":
        all_positions = np.concatenate([positions[keep], new_positions])
        all_vectors = np.concatenate([vectors[keep], add_embeddings])
        order = np.argsort(all_positions, kind="stable")
        graph = index_graph(all_vectors[order], num_candidates, positions=all_positions[order])

        def populate(folder: Path) -> None:
            save_index(graph, folder)
            np.save(folder / ITEM_IDS_FILE, final_ids)

    else:
        import faiss

        from builders import ann

        index = faiss.read_index(str(base_dir / "index.faiss"))
        params = json.loads((base_dir / "ann.json").read_text())
        dropped = np.concatenate([removed, new_positions])  # replaced ones go out first
        if len(dropped):
            index.remove_ids(faiss.IDSelectorBatch(dropped.astype(np.int64)))
        ann.add_items(index, add_embeddings, new_positions)
        live_positions, live_vectors = ann.ivf_items(index)
        queries = ann.probe_queries(live_vectors, HELDOUT_QUERIES, seed + 2)
        k = min(max(ann.RECALL_K, num_candidates), live_count)
        truth = ann.exact_neighbours(live_positions, live_vectors, queries, k)
        max_nprobe = max(1, int(params["nlist"] * ann.MAX_PROBE_FRACTION))
        recall = ann.measure_recall(index, params["nprobe"], queries, truth)
        if recall < recall_target:  # the lists drifted: probe more of them, without retraining
            nprobe, _ = ann.smallest_nprobe(index, queries, truth, recall_target, max_nprobe)
            if nprobe is None:
                raise ann.RecallError(
                    f"after the update {model} reaches recall@{k} {recall:.4f} at nprobe "
                    f"{params['nprobe']} and below {recall_target} up to nprobe {max_nprobe}: "
                    "the new items no longer fit the trained lists; rebuild the index"
                )
            params["nprobe"] = int(nprobe)
            recall = ann.measure_recall(index, nprobe, queries, truth)
        metrics.update(ann=params, recall_at_100=round(recall, 5))

        def populate(folder: Path) -> None:
            write_ann_files(folder, index, params, final_ids)

    base_manifest = read_manifest(repo, model, base)
    dataset = dict(base_manifest.get("dataset", {}))
    change = hashlib.sha256(
        final_ids.tobytes() + np.sort(new_positions).tobytes() + np.sort(removed).tobytes()
    ).hexdigest()
    if appended_ids:  # stages indexed by position do not know the appended ones yet
        dataset["fingerprint"] = hashlib.sha256(
            f"{dataset.get('fingerprint', '')}+{change}".encode()
        ).hexdigest()
    update = {
        "base_version": base,
        "appended": len(appended_ids),
        "restored_or_replaced": len(new_positions) - len(appended_ids),
        "removed": len(removed) - already_masked,
        "already_removed": already_masked,
        "change_sha256": change,
    }
    spec = spec_for(kind, model, dim, num_candidates)
    profile = base_manifest.get("profile", "cpu")
    gpu = profiles.adapt(spec, "gpu")
    served = served_versions(repo, model)
    target_version = version or versions[-1] + 1
    manifest = {
        "dataset": dataset,
        "profile": profile,
        "depends_on": base_manifest.get("depends_on", {}),
        "metrics": metrics,
        "parity": {},
        "catalog_update": update,
    }
    if "user_ids" in base_manifest:  # whether the build it updates pseudonymised user ids
        manifest["user_ids"] = base_manifest["user_ids"]
    path = write_version(
        repo,
        profiles.adapt(spec, profile),
        target_version,
        populate,
        manifest,
        named_configs={"gpu": gpu} if gpu != spec else {},
    )
    set_served_versions(repo, model, sorted({*served, target_version}))
    metrics["catalog_update"] = update
    return UpdateResult(path=path, version=target_version, metrics=metrics)
