"""Triton Python-backend model `search_query`: a search release's three query-only stages in
one process, so a query crosses one stage instead of three.

A release with an exact index writes it from the stages it pins (`build.build_release_query`):
the tokenizer stage (`tokenizer_model.py`, `tokenization.py`, `tokenizer.json`, its
`max_length` and `length_buckets` parameters), the query encoder composed with the exact
index (`model.onnx`, the `search_retrieval` version's) and the hybrid stage
(`hybrid_model.py`, `lexical.py`, `bm25/`, `synonyms.py` and `synonyms.txt` where the version
has one, `fusion.py`, `fusion.json`, `item_embeddings.npy`: the `hybrid_retrieval` version's).
It runs the tokenizer's and the hybrid stage's own `answer` on the batch, and the graph
between them as Triton batches it: the requests padded to one width together. So the answers
are those of the three stages one after the other.

Config: `max_batch_size` > 0 with dynamic batching; input `query` TYPE_STRING dims [1];
outputs the hybrid stage's (`candidate_indexes` TYPE_INT64 and `candidate_scores` (fused),
`candidate_dense_scores`, `candidate_lexical_scores` TYPE_FP32, dims [N]); parameters
`intra_op_thread_count` (ONNX Runtime's threads, 0: its default), `max_length` and
`length_buckets`. A query without a letter or digit gets an INVALID_ARG error response of
its own.
"""

import sys
from pathlib import Path

import numpy as np

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

import hybrid_model  # noqa: E402
import stage_glue  # noqa: E402
import tokenizer_model  # noqa: E402

RETRIEVAL_FILE = "model.onnx"
#: The composed graph's outputs: the query embedding, then the exact index's candidates.
RETRIEVED = ["embedding", "candidate_indexes", "candidate_scores"]


class TritonPythonModel:
    name = "query retrieval"
    inputs = ("query",)
    outputs = hybrid_model.TritonPythonModel.outputs
    invalid = ValueError  # EmptyQueryError, FusionError and the lexical index's refusals

    def initialize(self, args: dict) -> None:
        # Each reads what it needs of this config: the tokenizer its parameters, the hybrid
        # stage the candidates' width.
        self.tokenizer = tokenizer_model.TritonPythonModel()
        self.tokenizer.initialize(args)
        self.hybrid = hybrid_model.TritonPythonModel()
        self.hybrid.initialize(args)
        self.session = stage_glue.onnx_session(
            VERSION_DIR / RETRIEVAL_FILE, stage_glue.intra_op_threads(args)
        )

    def execute(self, requests: list) -> list:
        return stage_glue.execute(requests, self)

    def answer(self, group: list[dict]) -> list:
        """Per request, its four outputs or the EmptyQueryError refusing it."""
        answers = self.tokenizer.answer(group)  # (input_ids, attention_mask) or the error
        valid = [i for i, a in enumerate(answers) if not isinstance(a, Exception)]
        # Requests padded to one width run the graph together, as Triton batches them.
        retrieved: dict[int, dict] = {}
        for width in sorted({answers[i][0].shape[1] for i in valid}):
            members = [i for i in valid if answers[i][0].shape[1] == width]
            feeds = {
                "input_ids": np.concatenate([answers[i][0] for i in members]),
                "attention_mask": np.concatenate([answers[i][1] for i in members]),
            }
            outputs = self.session.run(RETRIEVED, feeds)
            sizes = [len(answers[i][0]) for i in members]
            for i, (embedding, indexes, scores) in zip(
                members, stage_glue.split_rows(sizes, *outputs)
            ):
                retrieved[i] = {
                    "query": group[i]["query"],
                    "dense_indexes": indexes,
                    "dense_scores": scores,
                    "query_embedding": embedding,
                }
        if valid:
            for i, fused in zip(valid, self.hybrid.answer([retrieved[i] for i in valid])):
                answers[i] = fused
        return answers
