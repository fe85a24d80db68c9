"""Pipeline releases and the Triton ensembles that serve them.

A release of `search` or `recommend` pins one version of every stage; its record is
the pipeline's version folder (`<repo>/search/<R>/`: `pipeline.json`, the manifest,
the catalog for display). Triton serves each release as an ensemble, and an
ensemble's steps live in its `config.pbtxt`, which all its versions share. So every
served release R is an ensemble model of its own, `search_v<R>` (with one version
folder, `R`, so responses name the release), and `search` itself is the ensemble of
the newest release: what a plain call, perf_analyzer or a cluster's stable track
reaches. Clients that pin or split releases call `search_v<R>` (`clients.routing`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from builders import names
from builders.specs import EnsembleSpec, EnsembleStep, VersionPolicy

#: Kinds of pipeline, which are also the names of their newest-release ensembles.
KINDS = (names.SEARCH, names.RECOMMEND)
PIPELINE_FILE = "pipeline.json"
_RELEASE_MODEL = re.compile(r"^(?P<kind>search|recommend)_v(?P<release>[1-9][0-9]*)$")


@dataclass(frozen=True)
class Stage:
    """A composing model, pinned to one version."""

    model: str
    version: int


@dataclass(frozen=True)
class PipelineSpec:
    """What `pipeline.json` in a release folder says: the stage of each role."""

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


def release_model(kind: str, release: int) -> str:
    """The Triton model that serves one release: `search_v2`."""
    if kind not in KINDS:
        raise ValueError(f"pipeline kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if release < 1:
        raise ValueError(f"releases start at 1, got {release}")
    return f"{kind}_v{release}"


def parse_release_model(name: str) -> tuple[str, int] | None:
    """(kind, release) of a release ensemble's name; None for any other model."""
    match = _RELEASE_MODEL.match(name)
    return (match["kind"], int(match["release"])) if match else None


def _step(stage: Stage, input_map: dict[str, str], output_map: dict[str, str]) -> EnsembleStep:
    return EnsembleStep(stage.model, stage.version, input_map, output_map)


def ensemble_steps(spec: PipelineSpec) -> tuple[EnsembleStep, ...]:
    """The steps of a release, in order; tensor names are the stages' own where they meet."""
    stages = spec.stages
    if spec.kind == names.SEARCH:
        steps = [
            _step(
                stages["tokenizer"],
                {"query": "query"},
                {"input_ids": "input_ids", "attention_mask": "attention_mask"},
            ),
            _step(
                stages["encoder"],
                {"input_ids": "input_ids", "attention_mask": "attention_mask"},
                {"embedding": "query_embedding"},
            ),
        ]
    else:
        steps = [
            _step(
                stages["user_tower"],
                {"user_id": "user_id"},
                {"user_embedding": "query_embedding"},
            )
        ]
    final_scores = "retrieval_scores"  # without a ranker: retrieval order
    features_map = {
        "user_id": "user_id",
        "candidate_ids": "candidate_indexes",
        "candidate_scores": "retrieval_scores",
    }
    if "lexical" in stages:  # hybrid retrieval: dense and BM25 candidates, fused
        steps += [
            _step(
                stages["index"],
                {"query_embedding": "query_embedding"},
                {"candidate_indexes": "dense_indexes", "candidate_scores": "dense_scores"},
            ),
            _step(
                stages["lexical"],
                {"query": "query", "dense_indexes": "dense_indexes"},
                {
                    "candidate_indexes": "lexical_indexes",
                    "candidate_scores": "bm25_scores",
                    "bm25_of_dense": "bm25_of_dense",
                },
            ),
            _step(
                stages["fusion"],
                {
                    "dense_indexes": "dense_indexes",
                    "dense_scores": "dense_scores",
                    "lexical_indexes": "lexical_indexes",
                    "lexical_scores": "bm25_scores",
                    "bm25_of_dense": "bm25_of_dense",
                    "query_embedding": "query_embedding",
                },
                # Triton refuses a tensor no step reads: the ranker reads the two scores,
                # top-k without a ranker the fused one.
                {"candidate_indexes": "candidate_indexes"}
                | (
                    {
                        "candidate_dense_scores": "retrieval_scores",
                        "candidate_lexical_scores": "lexical_scores",
                    }
                    if "ranker" in stages
                    else {"candidate_scores": "fused_scores"}
                ),
            ),
        ]
        final_scores = "fused_scores"
        features_map["lexical_scores"] = "lexical_scores"
    else:
        steps.append(
            _step(
                stages["index"],
                {"query_embedding": "query_embedding"},
                {"candidate_indexes": "candidate_indexes", "candidate_scores": "retrieval_scores"},
            )
        )
    if "ranker" in stages:
        steps += [
            _step(stages["features"], features_map, {"sparse": "sparse", "dense": "dense"}),
            _step(
                stages["ranker"],
                {"sparse": "sparse", "dense": "dense"},
                {"score": "ranker_scores"},
            ),
        ]
        final_scores = "ranker_scores"
    steps.append(
        _step(
            stages["top_k"],
            {"candidate_indexes": "candidate_indexes", "candidate_scores": final_scores, "k": "k"},
            {"item_ids": "item_ids", "scores": "scores", "truncated": "truncated"},
        )
    )
    return tuple(steps)


def ensemble(spec: PipelineSpec, release: int, name: str | None = None) -> EnsembleSpec:
    """The ensemble serving `release` (named `name`, default the release model), which
    serves exactly one version: `release`. Without a ranker (a catalog-only build) search
    takes no `user_id`: Triton refuses an ensemble input that no step reads."""
    inputs = names.SEARCH_INPUTS if spec.kind == names.SEARCH else names.RECOMMEND_INPUTS
    if "features" not in spec.stages:
        inputs = tuple(t for t in inputs if t.name != "user_id")
    return EnsembleSpec(
        name=name or release_model(spec.kind, release),
        inputs=inputs,
        outputs=names.PIPELINE_OUTPUTS,
        steps=ensemble_steps(spec),
        max_batch_size=names.PIPELINE_MAX_BATCH,
        version_policy=VersionPolicy(latest=None, specific=(release,)),
    )
