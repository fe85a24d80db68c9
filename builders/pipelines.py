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
from builders.repository import read_manifest
from builders.specs import EnsembleSpec, EnsembleStep, VersionPolicy

#: Kinds of pipeline, which are also the names of their newest-release ensembles.
KINDS = (names.SEARCH, names.RECOMMEND)
PIPELINE_FILE = "pipeline.json"
#: Roles of releases built before their stages merged, and what replaced them.
RETIRED_ROLES = {
    "lexical": "lexical_index and hybrid_fusion are one stage now, hybrid_retrieval",
    "fusion": "lexical_index and hybrid_fusion are one stage now, hybrid_retrieval",
}
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
        retired = sorted(set(raw["stages"]) & set(RETIRED_ROLES))
        if retired:
            raise ValueError(
                f"{path}: this release pins the retired stages {', '.join(retired)} "
                f"({RETIRED_ROLES[retired[0]]}); rebuild the repository with this version "
                "of the builders"
            )
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


#: The models a search release's `query` stage is composed of, and their roles.
QUERY_PARTS = {
    names.QUERY_TOKENIZER: "tokenizer",
    names.SEARCH_RETRIEVAL: "retrieval",
    names.HYBRID_RETRIEVAL: "hybrid",
}
#: The models a release's `ranking` stage is composed of, and their roles (in recommend, its
#: exact retrieval too: `build.build_release_ranking`).
RANKING_PARTS = {
    names.RECOMMEND_RETRIEVAL: "retrieval",
    names.RANKING_FEATURES: "features",
    names.SEARCH_RANKER: "ranker",
    names.RECOMMEND_RANKER: "ranker",
    names.TOP_K: "top_k",
}
#: The roles of the cpu profile's composed stages, and the parts of each.
COMPOSED_PARTS = {"query": QUERY_PARTS, "ranking": RANKING_PARTS}
#: The role whose model embeds the queries (search) or the users (recommend).
PRODUCER_ROLE = {names.SEARCH: "encoder", names.RECOMMEND: "user_tower"}


def apart(repo: Path, spec: PipelineSpec) -> PipelineSpec:
    """The release with each composed stage (`query`, `ranking`) replaced by the stages its
    manifest names, one role each, as releases served them before these were composed."""
    stages = dict(spec.stages)
    for role, parts in COMPOSED_PARTS.items():
        if role in stages:
            composed = stages.pop(role)
            depends_on = read_manifest(repo, composed.model, composed.version)["depends_on"]
            stages.update({parts[model]: Stage(model, v) for model, v in depends_on.items()})
    return PipelineSpec(spec.kind, spec.num_candidates, stages)


def lineage(repo: Path, spec: PipelineSpec) -> dict[str, Stage]:
    """The release's stages by role, and the stages its composed models were made from: the
    parts of `query` and `ranking` (`apart`), and where it serves `retrieval` (its producer
    and exact index as one model), those two."""
    stages = {**spec.stages, **apart(repo, spec).stages}
    if "retrieval" in stages:
        retrieval = stages["retrieval"]
        parts = read_manifest(repo, retrieval.model, retrieval.version)["depends_on"]
        for model, version in parts.items():
            is_index = model in (names.SEARCH_INDEX, names.RECOMMEND_INDEX)
            stages["index" if is_index else PRODUCER_ROLE[spec.kind]] = Stage(model, version)
    return stages


def _ranks(stages: dict[str, Stage]) -> bool:
    """Whether a release's stages rank the candidates (a ranker, apart or in `ranking`)."""
    return "ranker" in stages or "ranking" in stages


def query_encoder(repo: Path, spec: PipelineSpec) -> Stage:
    """The query encoder a search release serves (the teacher or a student), on its own or
    inside its `retrieval` model."""
    return lineage(repo, spec)["encoder"]


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


#: The last step's outputs: the pipeline's answer.
ANSWER = {"item_ids": "item_ids", "scores": "scores", "truncated": "truncated"}


def _step(stage: Stage, input_map: dict[str, str], output_map: dict[str, str]) -> EnsembleStep:
    return EnsembleStep(stage.model, stage.version, input_map, output_map)


def ensemble_steps(spec: PipelineSpec) -> tuple[EnsembleStep, ...]:
    """The steps of a release, in order; tensor names are the stages' own where they meet.

    Search serves the role `query` where the release composed its tokenizer, retrieval and
    hybrid stages into one model (`build.build_release_query`). Else retrieval is the role
    `retrieval` where the release serves its exact index inside the producer's graph
    (`retrieval.compose_retrieval`), else the producer (`encoder` or `user_tower`) and then
    the `index` (ANN). The ranking follows (`_ranked_steps`). A recommend release whose
    `ranking` stage retrieves its own candidates (`build.build_release_ranking`) is that one
    step."""
    stages = spec.stages
    if "query" in stages:
        return _ranked_steps(stages, [_query_step(stages)], "fused_scores", hybrid=True)
    if spec.kind == names.RECOMMEND and set(stages) == {"ranking"}:
        return (_step(stages["ranking"], {"user_id": "user_id", "k": "k"}, ANSWER),)
    hybrid = "hybrid" in stages  # dense and BM25 candidates, fused
    retrieved = (
        {"candidate_indexes": "dense_indexes", "candidate_scores": "dense_scores"}
        if hybrid
        else {"candidate_indexes": "candidate_indexes", "candidate_scores": "retrieval_scores"}
    )
    if spec.kind == names.SEARCH:
        steps = [
            _step(
                stages["tokenizer"],
                {"query": "query"},
                {"input_ids": "input_ids", "attention_mask": "attention_mask"},
            )
        ]
        producer, embedded = "encoder", {"embedding": "query_embedding"}
        inputs = {"input_ids": "input_ids", "attention_mask": "attention_mask"}
    else:
        steps = []
        producer, embedded = "user_tower", {"user_embedding": "query_embedding"}
        inputs = {"user_id": "user_id"}
    if "retrieval" in stages:
        # Triton refuses a tensor no step reads: only the hybrid step reads the embedding.
        steps.append(_step(stages["retrieval"], inputs, (embedded if hybrid else {}) | retrieved))
    else:
        steps += [
            _step(stages[producer], inputs, embedded),
            _step(stages["index"], {"query_embedding": "query_embedding"}, retrieved),
        ]
    final_scores = "retrieval_scores"  # without a ranker: retrieval order
    if hybrid:
        hybrid_inputs = {
            "query": "query",
            "dense_indexes": "dense_indexes",
            "dense_scores": "dense_scores",
            "query_embedding": "query_embedding",
        }
        steps.append(_step(stages["hybrid"], hybrid_inputs, _fused_outputs(stages)))
        final_scores = "fused_scores"
    return _ranked_steps(stages, steps, final_scores, hybrid)


def _query_step(stages: dict[str, Stage]) -> EnsembleStep:
    """The `query` stage: the query in, the fused candidates out."""
    return _step(stages["query"], {"query": "query"}, _fused_outputs(stages))


def _fused_outputs(stages: dict[str, Stage]) -> dict[str, str]:
    """What the hybrid candidates hand on: the ranker reads the two scores, top-k without a
    ranker the fused one."""
    if _ranks(stages):
        return {
            "candidate_indexes": "candidate_indexes",
            "candidate_dense_scores": "retrieval_scores",
            "candidate_lexical_scores": "lexical_scores",
        }
    return {"candidate_indexes": "candidate_indexes", "candidate_scores": "fused_scores"}


def _ranked_steps(
    stages: dict[str, Stage], steps: list[EnsembleStep], final_scores: str, hybrid: bool
) -> tuple[EnsembleStep, ...]:
    """`steps` (retrieval), then the ranking: the `ranking` stage (features, ranker and top-k
    in one model, `build.build_release_ranking`), or the features and the ranker where the
    release has them and top-k over `final_scores` (the ranker's where it ranks)."""
    features_map = {
        "user_id": "user_id",
        "candidate_ids": "candidate_indexes",
        "candidate_scores": "retrieval_scores",
    }
    if hybrid:
        features_map["lexical_scores"] = "lexical_scores"
    if "ranking" in stages:
        steps.append(_step(stages["ranking"], features_map | {"k": "k"}, ANSWER))
        return tuple(steps)
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
            ANSWER,
        )
    )
    return tuple(steps)


def ensemble(spec: PipelineSpec, release: int, name: str | None = None) -> EnsembleSpec:
    """The ensemble serving `release` (named `name`, default the release model), which
    serves exactly one version: `release`. Without a ranker (a catalog-only build) search
    takes no `user_id`: Triton refuses an ensemble input that no step reads."""
    inputs = names.SEARCH_INPUTS if spec.kind == names.SEARCH else names.RECOMMEND_INPUTS
    if not _ranks(spec.stages):
        inputs = tuple(t for t in inputs if t.name != "user_id")
    return EnsembleSpec(
        name=name or release_model(spec.kind, release),
        inputs=inputs,
        outputs=names.PIPELINE_OUTPUTS,
        steps=ensemble_steps(spec),
        max_batch_size=names.PIPELINE_MAX_BATCH,
        version_policy=VersionPolicy(latest=None, specific=(release,)),
    )
