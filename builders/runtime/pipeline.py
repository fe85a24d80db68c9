"""Pure logic of the `search` and `recommend` pipeline models (BLS).

Copied next to `model.py` (and `features.py`, whose user lookup it shares)
into each pipeline version folder; standard library and numpy only. The glue
validates every request with these functions first, so one bad request gets
its own error and never spoils the batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: `user_id` value standing for "no user given" inside a batch; never a real id.
NO_USER = -1
#: Longest query (in characters) a pipeline accepts; longer ones are cut.
MAX_QUERY_CHARS = 4096


class PipelineRequestError(ValueError):
    """A request the pipeline answers with an INVALID_ARG error."""


@dataclass(frozen=True)
class Stage:
    """A composing model, pinned to one version."""

    model: str
    version: int


@dataclass(frozen=True)
class PipelineSpec:
    """What `pipeline.json` in a version folder says."""

    kind: str  # "search" or "recommend"
    num_candidates: int
    stages: dict[str, Stage]

    @classmethod
    def load(cls, path: Path) -> PipelineSpec:
        raw = json.loads(Path(path).read_text())
        return cls(
            kind=raw["kind"],
            num_candidates=int(raw["num_candidates"]),
            stages={
                role: Stage(s["model"], int(s["version"])) for role, s in raw["stages"].items()
            },
        )

    def to_json(self) -> str:
        stages = {r: {"model": s.model, "version": s.version} for r, s in self.stages.items()}
        body = {"kind": self.kind, "num_candidates": self.num_candidates, "stages": stages}
        return json.dumps(body, indent=2, sort_keys=True) + "\n"


def parse_k(values: np.ndarray | None) -> int:
    """The requested k: one integer, at least 1 (more than exists returns what exists)."""
    if values is None:
        raise PipelineRequestError("input 'k' is required")
    flat = np.asarray(values).reshape(-1)
    if flat.size != 1:
        raise PipelineRequestError(f"'k' must hold one value, got {flat.size}")
    k = int(flat[0])
    if k < 1:
        raise PipelineRequestError(f"'k' must be at least 1, got {k}")
    return k


def parse_query(values: np.ndarray | None) -> str:
    """The query text: UTF-8 (invalid bytes replaced), trimmed, never empty."""
    if values is None:
        raise PipelineRequestError("input 'query' is required")
    flat = np.asarray(values, dtype=object).reshape(-1)
    if flat.size != 1:
        raise PipelineRequestError(f"'query' must hold one string, got {flat.size}")
    raw = flat[0]
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    text = text[:MAX_QUERY_CHARS].strip()
    if not text:
        raise PipelineRequestError("'query' is empty")
    return text


def parse_user_id(values: np.ndarray | None, required: bool) -> int:
    """The user id, or NO_USER when it is optional and absent."""
    if values is None:
        if required:
            raise PipelineRequestError("input 'user_id' is required")
        return NO_USER
    flat = np.asarray(values).reshape(-1)
    if flat.size != 1:
        raise PipelineRequestError(f"'user_id' must hold one value, got {flat.size}")
    return int(flat[0])


def top_k(
    candidate_indexes: np.ndarray, ranker_scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best candidates by ranker score (ties keep retrieval order); padding (-1) dropped."""
    valid = candidate_indexes >= 0
    indexes, scores = candidate_indexes[valid], ranker_scores[valid]
    order = np.argsort(-scores, kind="stable")[:k]
    return indexes[order], scores[order].astype(np.float32)
