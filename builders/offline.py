"""The pipelines run without Triton, straight from a repository's version folders.

Reads a release's `pipeline.json` and runs each pinned stage with its
framework (the tokenizer module, ONNX Runtime or FAISS, the BM25 and fusion modules,
TensorFlow, the features module), then the same top-k as the served `top_k`
step. Served results must equal these (the end-to-end parity tests), and the
quality benchmark scores them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from builders.pipelines import PIPELINE_FILE, PipelineSpec, lineage
from builders.runtime.ann_index import INDEX_FILE as ANN_INDEX_FILE
from builders.runtime.ann_index import AnnIndex
from builders.runtime.features import FeatureTables, ranker_inputs
from builders.runtime.fusion import EMBEDDINGS_FILE, FusionSettings, hybrid
from builders.runtime.lexical import LexicalIndex
from builders.runtime.stage_glue import onnx_session
from builders.runtime.tokenization import QueryTokenizer
from builders.runtime.topk import top_k
from builders.specs import parse_pbtxt

#: Stands for "no user given"; never a real user id.
NO_USER = -1


class Candidates(NamedTuple):
    """Retrieved candidates [requests, N], in retrieval order: `scores` order them without a
    ranker (fused or dense); `dense_scores` and `lexical_scores` (None without a lexical
    stage) are what the ranker's features read."""

    indexes: np.ndarray
    scores: np.ndarray
    dense_scores: np.ndarray
    lexical_scores: np.ndarray | None


def fused_candidates(
    queries: list[str],
    embeddings: np.ndarray,
    dense: tuple[np.ndarray, np.ndarray],
    lexical: LexicalIndex,
    item_embeddings: np.ndarray,
    num_candidates: int,
    settings: FusionSettings,
) -> Candidates:
    """What the hybrid stage hands on for the `dense` candidates (indexes and scores) of
    `queries` (embedded as `embeddings`): `fusion.hybrid`'s fused candidates."""
    return Candidates(
        *hybrid(queries, embeddings, *dense, lexical, item_embeddings, num_candidates, settings)
    )


class OfflinePipeline:
    def __init__(self, repo: Path, kind: str, version: int) -> None:
        self.repo = Path(repo)
        self.folder = self.repo / kind / str(version)
        self.spec = PipelineSpec.load(self.folder / PIPELINE_FILE)
        self.stages = lineage(self.repo, self.spec)  # with the parts of its composed stages
        self.item_ids = np.load(self.stage_folder("top_k") / "item_ids.npy")
        self._sessions: dict[str, object] = {}

    def stage_folder(self, role: str) -> Path:
        """The version folder of the release's stage in `role`."""
        stage = self.stages[role]
        return self.repo / stage.model / str(stage.version)

    def _onnx(self, role: str, inputs: dict, outputs: list[str]) -> list[np.ndarray]:
        if role not in self._sessions:
            # Idle threads sleep instead of spinning: in one process the index's and ranker's
            # spinning threads starve the next call's encoder (a batch-1 search took 45-50 ms
            # instead of 9 ms on 2 cores).
            self._sessions[role] = onnx_session(self.stage_folder(role) / "model.onnx")
        return self._sessions[role].run(outputs, inputs)

    def rank(self, sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
        """The release's ranker alone: scores [batch, N] of `ranker_inputs`' features."""
        return self._ranker(sparse, dense)

    def _ranker(self, sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
        folder = self.stage_folder("ranker")
        if (folder / "model.onnx").exists():
            return self._onnx("ranker", {"sparse": sparse, "dense": dense}, ["score"])[0]
        if "ranker" not in self._sessions:
            import tensorflow as tf

            loaded = tf.saved_model.load(str(folder / "model.savedmodel"))
            self._sessions["ranker"] = (loaded, loaded.signatures["serving_default"])
        signature = self._sessions["ranker"][1]
        return signature(sparse=sparse, dense=dense)["score"].numpy()

    def _tokens(self, queries: list[str]) -> dict[str, np.ndarray]:
        if "tokenizer" not in self._sessions:
            folder = self.stage_folder("tokenizer")
            config = parse_pbtxt((folder.parent / "config.pbtxt").read_text())
            self._sessions["tokenizer"] = QueryTokenizer.from_parameters(
                folder / "tokenizer.json", config.get("parameters", {})
            )
        ids, mask = self._sessions["tokenizer"].encode(queries)
        return {"input_ids": ids, "attention_mask": mask}

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        """The query encoder alone (the one the release serves)."""
        return self._onnx("encoder", self._tokens(queries), ["embedding"])[0]

    def retrieve(
        self, queries: list[str] | None = None, user_ids: list[int | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The query (or user) embeddings [requests, dim] and the dense index's candidate
        item indexes and scores [requests, N], best first: by the release's `retrieval`
        model where it serves one, else by its producer and then its index."""
        search = self.spec.kind == "search"
        if "retrieval" in self.stages:
            feeds = (
                self._tokens(queries)
                if search
                else {"user_id": self._users(queries, user_ids)[:, None]}
            )
            produced = "embedding" if search else "user_embedding"
            embedding, *found = self._onnx(
                "retrieval", feeds, [produced, "candidate_indexes", "candidate_scores"]
            )
            return embedding, *found
        if search:
            embedding = self.embed_queries(queries)
        else:
            users = self._users(queries, user_ids)[:, None]
            (embedding,) = self._onnx("user_tower", {"user_id": users}, ["user_embedding"])
        return embedding, *self._dense_index(embedding)

    def _users(self, queries: list[str] | None, user_ids: list | None) -> np.ndarray:
        """User ids int64 [n]; a query without a user gets NO_USER (an unknown user, as the
        served features step treats a request without `user_id`)."""
        count = len(queries) if self.spec.kind == "search" else len(user_ids)
        users = user_ids if user_ids is not None else [None] * count
        return np.array([NO_USER if u is None else u for u in users], dtype=np.int64)

    def dense(
        self, queries: list[str] | None = None, user_ids: list[int | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The dense index stage: candidate item indexes and scores [requests, N], best first."""
        return self.retrieve(queries, user_ids)[1:]

    def _dense_index(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        folder = self.stage_folder("index")
        if not (folder / ANN_INDEX_FILE).exists():
            candidates, scores = self._onnx(
                "index", {"query_embedding": embedding}, ["candidate_indexes", "candidate_scores"]
            )
            return candidates, scores
        if "index" not in self._sessions:
            config = parse_pbtxt((folder.parent / "config.pbtxt").read_text())
            nprobe = config.get("parameters", {}).get("nprobe", {}).get("string_value")
            self._sessions["index"] = AnnIndex.load(
                folder, self.spec.num_candidates, nprobe=int(nprobe) if nprobe else None
            )
        return self._sessions["index"].search(embedding)

    def lexical(
        self, queries: list[str], also: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lexical (BM25) stage: candidate item indexes and BM25 scores [requests, N],
        and the BM25 of the items `also` names (the dense candidates)."""
        return self._lexical_index().search(queries, self.spec.num_candidates, also)

    def _lexical_index(self) -> LexicalIndex:
        if "lexical" not in self._sessions:
            self._sessions["lexical"] = LexicalIndex.load(self.stage_folder("hybrid"))
        return self._sessions["lexical"]

    def candidates(
        self,
        queries: list[str] | None = None,
        user_ids: list[int | None] | None = None,
        fusion: FusionSettings | None = None,
    ) -> Candidates:
        """What the retrieval stages hand to the ranker (or, without one, to top-k); `fusion`
        replaces the fusion version's settings (to compare methods)."""
        embeddings, *dense = self.retrieve(queries, user_ids)
        if "hybrid" not in self.stages:
            return Candidates(dense[0], dense[1], dense[1], None)
        folder = self.stage_folder("hybrid")
        if "fusion" not in self._sessions:
            self._sessions["fusion"] = np.load(folder / EMBEDDINGS_FILE)
        return fused_candidates(
            queries,
            embeddings,
            tuple(dense),
            self._lexical_index(),
            self._sessions["fusion"],
            self.spec.num_candidates,
            fusion or FusionSettings.load(folder),
        )

    def run(
        self,
        k: int,
        queries: list[str] | None = None,
        user_ids: list[int | None] | None = None,
        ranker: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(item ids, scores) per request, as the served pipeline answers them; `ranker`
        (sparse, dense -> scores) replaces the release's ranker (to compare rankers)."""
        users = self._users(queries, user_ids)
        found = self.candidates(queries, user_ids)
        ranked = found.scores
        if "ranker" in self.stages:
            if "features" not in self._sessions:
                self._sessions["features"] = FeatureTables.load(
                    self.stage_folder("features") / "tables.npz"
                )
            sparse, dense = ranker_inputs(
                self._sessions["features"],
                users,
                found.indexes,
                found.dense_scores,
                found.lexical_scores,
            )
            ranked = (ranker or self._ranker)(sparse, dense)
        results = []
        for row in range(len(found.indexes)):
            indexes, best = top_k(found.indexes[row], ranked[row], k)
            results.append((self.item_ids[indexes], best))
        return results
