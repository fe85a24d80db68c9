"""Triton glue of the `search` / `recommend` pipeline models (Python backend, BLS).

Each version folder pins its stage models in `pipeline.json`, so version 1 keeps
answering with the stages it was built with while version 2 uses newer ones (a
Triton ensemble cannot do that: its config, steps included, is shared by all
its versions). The stages are ordinary Triton models with their own dynamic
batching; this model sends each stage ONE request for the whole batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from features import lookup_user_indexes
from pipeline import (
    NO_USER,
    PipelineRequestError,
    PipelineSpec,
    parse_k,
    parse_query,
    parse_user_id,
    top_k,
)


class StageError(RuntimeError):
    """A stage answered with an error; `code` is the Triton error code to pass on."""

    def __init__(self, message: str, code) -> None:
        super().__init__(message)
        self.code = code


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        self.spec = PipelineSpec.load(folder / "pipeline.json")
        self.item_ids = np.load(folder / "item_ids.npy")
        self.known_users = np.load(folder / "user_ids.npy")
        self.model_name = json.loads(args["model_config"])["name"]

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        parsed = {}
        for index, request in enumerate(requests):
            try:
                parsed[index] = self._parse(request)
            except PipelineRequestError as err:
                responses[index] = _error(str(err), pb_utils.TritonError.INVALID_ARG)
        failures: list[StageError] = []
        answers = self._answer(list(parsed), [parsed[i] for i in parsed], failures)
        if len(failures) == len(requests) and all(
            f.code != pb_utils.TritonError.INVALID_ARG for f in failures
        ):
            # Every request failed inside a stage: a server-side failure. Raising (rather
            # than answering errors) is what Triton counts in nv_inference_request_failure.
            raise pb_utils.TritonModelException(str(failures[0]))
        for index, response in answers.items():
            responses[index] = response
        return responses

    def _answer(self, indexes: list[int], batch: list[tuple], failures: list) -> dict:
        """Run the batch; if a stage fails, run each request alone so only the culprit fails."""
        if not batch:
            return {}
        try:
            results = self._run(batch)
        except StageError as err:
            if len(batch) == 1:
                failures.append(err)
                return {indexes[0]: _error(str(err), err.code)}
            answers = {}
            for index, request in zip(indexes, batch):
                answers.update(self._answer([index], [request], failures))
            return answers
        return {i: _response(*result) for i, result in zip(indexes, results)}

    def _parse(self, request) -> tuple:
        def get(name):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        k = parse_k(get("k"))
        if self.spec.kind == "search":
            return parse_query(get("query")), parse_user_id(get("user_id"), required=False), k
        return None, parse_user_id(get("user_id"), required=True), k

    def _stage(self, role: str, inputs: dict, outputs: list[str]) -> list[np.ndarray]:
        stage = self.spec.stages[role]
        request = pb_utils.InferenceRequest(
            model_name=stage.model,
            model_version=stage.version,
            inputs=[pb_utils.Tensor(name, value) for name, value in inputs.items()],
            requested_output_names=outputs,
        )
        response = request.exec()
        if response.has_error():
            error = response.error()
            raise StageError(
                f"{self.model_name}: stage {role} ({stage.model} version {stage.version}) "
                f"failed: {error.message()}",
                error.code(),
            )
        return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]

    def _run(self, batch: list[tuple]) -> list[tuple]:
        user_ids = np.array([[user] for _, user, _ in batch], dtype=np.int64)
        if self.spec.kind == "search":
            queries = np.array([[q.encode("utf-8")] for q, _, _ in batch], dtype=np.object_)
            ids, mask = self._stage(
                "tokenizer", {"query": queries}, ["input_ids", "attention_mask"]
            )
            (query_embedding,) = self._stage(
                "encoder", {"input_ids": ids, "attention_mask": mask}, ["embedding"]
            )
        else:
            rows = lookup_user_indexes(self.known_users, user_ids)
            (query_embedding,) = self._stage("user_tower", {"user_index": rows}, ["user_embedding"])
        candidates, retrieval_scores = self._stage(
            "index",
            {"query_embedding": query_embedding},
            ["candidate_indexes", "candidate_scores"],
        )
        ranker_scores = retrieval_scores  # without a ranker: retrieval order
        if "ranker" in self.spec.stages:
            feature_inputs = {"candidate_ids": candidates, "candidate_scores": retrieval_scores}
            if (user_ids != NO_USER).any():
                feature_inputs["user_id"] = user_ids
            sparse, dense = self._stage("features", feature_inputs, ["sparse", "dense"])
            (ranker_scores,) = self._stage("ranker", {"sparse": sparse, "dense": dense}, ["score"])
        results = []
        for row, (_, _, k) in enumerate(batch):
            indexes, scores = top_k(candidates[row], ranker_scores[row], k)
            results.append((self.item_ids[indexes], scores, k))
        return results


def _response(item_ids: np.ndarray, scores: np.ndarray, k: int):
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("item_ids", item_ids.astype(np.int64).reshape(1, -1)),
            pb_utils.Tensor("scores", scores.astype(np.float32).reshape(1, -1)),
            pb_utils.Tensor("truncated", np.array([[len(item_ids) < k]], dtype=np.bool_)),
        ]
    )


def _error(message: str, code):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
