"""Triton Python-backend model: retrieval candidates to the ranker's `sparse` and `dense` inputs.

Copied as `model.py` into a version folder next to `features.py` and `tables.npz`.
Config: `max_batch_size` > 0; inputs `user_id` TYPE_INT64 dims [1] (optional: absent means
unknown users), `candidate_ids` TYPE_INT64 dims [-1] (item indexes, -1 = padding),
`candidate_scores` TYPE_FP32 dims [-1] (dense retrieval) and `lexical_scores` TYPE_FP32
dims [-1] (optional: absent means 0, as in recommend); outputs `sparse` TYPE_INT64 dims [-1, S] and
`dense` TYPE_FP32 dims [-1, D] (S, D: `features.NUM_SPARSE`, `features.NUM_DENSE`).
A malformed request gets an error response of its own; the others are answered.
"""

import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

from features import FeatureError, FeatureTables, ranker_inputs  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.tables = FeatureTables.load(VERSION_DIR / "tables.npz")

    def execute(self, requests: list) -> list:
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        try:
            user_tensor = pb_utils.get_input_tensor_by_name(request, "user_id")
            candidates = pb_utils.get_input_tensor_by_name(request, "candidate_ids").as_numpy()
            scores = pb_utils.get_input_tensor_by_name(request, "candidate_scores").as_numpy()
            lexical_tensor = pb_utils.get_input_tensor_by_name(request, "lexical_scores")
            user_ids = None if user_tensor is None else user_tensor.as_numpy().reshape(-1)
            lexical = None if lexical_tensor is None else lexical_tensor.as_numpy()
            sparse, dense = ranker_inputs(self.tables, user_ids, candidates, scores, lexical)
        except FeatureError as err:
            return _error_response(str(err), pb_utils.TritonError.INVALID_ARG)
        except Exception as err:  # noqa: BLE001 - one bad request must not fail the others
            return _error_response(
                f"feature lookup failed: {type(err).__name__}: {err}", pb_utils.TritonError.INTERNAL
            )
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor("sparse", sparse), pb_utils.Tensor("dense", dense)]
        )


def _error_response(message: str, code):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
