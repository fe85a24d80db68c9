"""perf_analyzer `--input-data` JSON from the dataset: real queries, skewed user ids.

Queries are drawn with their logged frequency (typos included) and user ids in
proportion to their logged activity, so the caches, batch shapes and cold-start
share a load test sees are those of real traffic, not of random tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

from builders import names, pseudonyms
from builders.data import Dataset, load_dataset
from builders.repository import model_versions
from builders.runtime.tokenization import QueryTokenizer
from builders.specs import parse_pbtxt

DEFAULT_K = 10
#: Models whose inputs this module can draw from the dataset.
SUPPORTED = (
    names.SEARCH,
    names.RECOMMEND,
    names.QUERY_TOKENIZER,
    names.SEARCH_QUERY,
    *names.QUERY_ENCODERS,
)


def dataset_of(repo: Path, model: str) -> Dataset:
    """The dataset a model was built from, as its latest version's manifest records it
    (user ids pseudonymised with $USER_ID_KEY where the build pseudonymised them)."""
    version = max(model_versions(repo, model))
    manifest = json.loads((repo / model / str(version) / "manifest.json").read_text())
    recorded = manifest.get("dataset") or {}
    if "name" not in recorded:
        raise ValueError(f"{model} version {version} does not record its dataset")
    params = {key: _number(value) for key, value in (recorded.get("params") or {}).items()}
    dataset = load_dataset(recorded["name"], **params)
    users = manifest.get("user_ids") or {}
    key = pseudonyms.read_key() if users.get("pseudonymised") else None
    return pseudonyms.as_built(dataset, users, key)


def _number(value: object) -> object:
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            continue
    return value


def _tokenizer(repo: Path) -> QueryTokenizer:
    folder = repo / names.QUERY_TOKENIZER
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    version = max(model_versions(repo, names.QUERY_TOKENIZER))
    return QueryTokenizer.from_parameters(
        folder / str(version) / "tokenizer.json", config.get("parameters", {})
    )


def input_data(model: str, dataset: Dataset, repo: Path, n: int = 256, seed: int = 0) -> dict:
    """The `--input-data` document for `model`: `n` requests drawn from `dataset`."""
    if model not in SUPPORTED:
        raise ValueError(
            f"no realistic input data for {model!r} (supported: {', '.join(SUPPORTED)}); "
            "leave input_data out of the sweep file to use perf_analyzer's random data"
        )
    if model == names.RECOMMEND:
        users = dataset.sample_user_ids(n, seed)
        return {"data": [{"user_id": [int(u)], "k": [DEFAULT_K]} for u in users]}
    queries = dataset.sample_queries(n, seed)
    if model in (names.QUERY_TOKENIZER, names.SEARCH_QUERY):
        return {"data": [{"query": [q]} for q in queries]}
    if model == names.SEARCH:
        users = dataset.sample_user_ids(n, seed + 1)
        return {
            "data": [
                {"query": [q], "user_id": [int(u)], "k": [DEFAULT_K]}
                for q, u in zip(queries, users)
            ]
        }
    input_ids, attention_mask = _tokenizer(repo).encode(queries)
    return {
        "data": [
            {
                "input_ids": {"content": ids.tolist(), "shape": [len(ids)]},
                "attention_mask": {"content": mask.tolist(), "shape": [len(mask)]},
            }
            for ids, mask in zip(input_ids, attention_mask)
        ]
    }


def write_input_data(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path
