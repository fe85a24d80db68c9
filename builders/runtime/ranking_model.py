"""Triton Python-backend model `search_ranking` or `recommend_ranking`: a release's features,
ranker and top-k stages in one process, so the candidates cross one stage instead of three;
in recommend, the exact retrieval graph too, so a recommendation is one stage.

A release writes it from the stages it pins (`build.build_release_ranking`): the features
stage (`features_model.py`, `features.py`, `tables.npz`), the ranker (`ranker.onnx`, run in
ONNX Runtime, or `ranker.savedmodel`, its `serving_default` signature in TensorFlow) and the
top-k stage (`topk_model.py`, `topk.py`, `item_ids.npy`). It runs the features stage's and the
top-k stage's own `answer` on the batch, and the ranker once between them on the whole batch,
as Triton batches it. So the answers are those of the three stages one after the other.
A recommend release with an exact index also writes its `recommend_retrieval` graph (the user
tower and the index, `retrieval.onnx`): the stage then takes the pipeline's own inputs and
runs that graph on the whole batch first, as the retrieval stage would.

Config: `max_batch_size` > 0 with dynamic batching; inputs the features stage's (`user_id`,
`candidate_ids`, `candidate_scores`, `lexical_scores`) and `k` TYPE_INT32 dims [1]; outputs the
top-k stage's (`item_ids`, `scores`, `truncated`); parameter `intra_op_thread_count` (the
ranker's threads, 0: its framework's default). A malformed request or a bad `k` gets an
INVALID_ARG error response of its own. With `retrieval.onnx`: inputs `user_id` TYPE_INT64
dims [1] (an unknown user gets the unknown user's candidates) and `k`.
"""

import sys
from pathlib import Path

import numpy as np

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

import features_model  # noqa: E402
import stage_glue  # noqa: E402
import topk_model  # noqa: E402

#: The ranker's file in the folder, by format: the first that exists is served.
RANKER_FILES = ("ranker.onnx", "ranker.savedmodel")
#: Recommend's user tower and exact index, where the stage retrieves its own candidates.
RETRIEVAL_FILE = "retrieval.onnx"
RETRIEVED = ["candidate_indexes", "candidate_scores"]


class TritonPythonModel:
    name = "ranking"
    inputs = (*features_model.TritonPythonModel.inputs, "k")
    outputs = topk_model.TritonPythonModel.outputs
    invalid = (features_model.TritonPythonModel.invalid, topk_model.TritonPythonModel.invalid)

    def initialize(self, args: dict) -> None:
        self.features = features_model.TritonPythonModel()
        self.features.initialize(args)
        self.top_k = topk_model.TritonPythonModel()
        self.top_k.initialize(args)
        threads = stage_glue.intra_op_threads(args)
        self.rank = ranker(VERSION_DIR, threads)
        self.retrieval = None
        if (VERSION_DIR / RETRIEVAL_FILE).exists():
            self.retrieval = stage_glue.onnx_session(VERSION_DIR / RETRIEVAL_FILE, threads)
            self.inputs = ("user_id", "k")

    def execute(self, requests: list) -> list:
        return stage_glue.execute(requests, self)

    def answer(self, group: list[dict]) -> list:
        """Per request, its three outputs or the error refusing it. A malformed request makes
        the features stage raise, so `stage_glue` answers each request of the group alone."""
        if self.retrieval is not None:
            group = self.retrieve(group)
        features = self.features.answer(group)  # per request: (sparse, dense)
        scores = self.rank(
            np.concatenate([sparse for sparse, _ in features]),
            np.concatenate([dense for _, dense in features]),
        )
        sizes = [len(sparse) for sparse, _ in features]
        ranked = [
            {"candidate_indexes": inputs["candidate_ids"], "candidate_scores": s, "k": inputs["k"]}
            for inputs, (s,) in zip(group, stage_glue.split_rows(sizes, scores))
        ]
        return self.top_k.answer(ranked)

    def retrieve(self, group: list[dict]) -> list[dict]:
        """The features stage's inputs of each request: its user's candidates, retrieved for
        the whole group in one run of the retrieval graph."""
        users = np.concatenate([inputs["user_id"] for inputs in group])
        found = self.retrieval.run(RETRIEVED, {"user_id": users})
        return [
            {
                "user_id": inputs["user_id"],
                "candidate_ids": indexes,
                "candidate_scores": scores,
                "lexical_scores": None,
                "k": inputs["k"],
            }
            for inputs, (indexes, scores) in zip(group, stage_glue.split(group, *found))
        ]


def ranker(folder: Path, threads: int):
    """The ranker in `folder` as a function (sparse [B, N, S], dense [B, N, D]) -> scores
    [B, N]; `threads` intra-op threads (0: the framework's default)."""
    path = next((folder / f for f in RANKER_FILES if (folder / f).exists()), None)
    if path is None:
        raise FileNotFoundError(f"{folder} holds no ranker ({' or '.join(RANKER_FILES)})")
    if path.suffix == ".onnx":
        session = stage_glue.onnx_session(path, threads)
        return lambda sparse, dense: session.run(["score"], {"sparse": sparse, "dense": dense})[0]
    import tensorflow as tf

    if threads != tf.config.threading.get_intra_op_parallelism_threads():  # 0 by default
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda sparse, dense: signature(sparse=tf.constant(sparse), dense=tf.constant(dense))[
        "score"
    ].numpy()
