"""Triton Python-backend model: approximate nearest-neighbour retrieval with FAISS.

Copied as `model.py` into a version folder next to `ann_index.py`, `index.faiss`,
`ann.json` (the tuned parameters) and `item_ids.npy` (catalog position -> item id).
Config: `max_batch_size` > 0 with dynamic batching; input `query_embedding` TYPE_FP32
dims [dim]; outputs `candidate_indexes` TYPE_INT64 dims [N] and `candidate_scores`
TYPE_FP32 dims [N], the exact index's contract. Optional parameters: `nprobe` (overrides
the version's tuned value, e.g. from a sweep through the repository API), `omp_threads`
(default 1) and `device` (`auto`: the GPU when faiss has GPU support and one is visible).
A whole dynamic batch is one FAISS search; if it fails, each request is answered alone.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

from ann_index import AnnIndex, QueryError  # noqa: E402


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        outputs = {o["name"]: o for o in config["output"]}
        num_candidates = int(outputs["candidate_indexes"]["dims"][-1])
        nprobe = parameters.get("nprobe")
        self.index = AnnIndex.load(
            VERSION_DIR,
            num_candidates,
            nprobe=int(nprobe) if nprobe else None,
            threads=int(parameters.get("omp_threads", "1")),
            device=parameters.get("device", "auto"),
            gpu_id=int(args.get("model_instance_device_id", 0) or 0),
        )

    def execute(self, requests: list) -> list:
        queries = [
            pb_utils.get_input_tensor_by_name(r, "query_embedding").as_numpy() for r in requests
        ]
        try:
            indexes, scores = self.index.search(np.concatenate(queries))
        except Exception:  # noqa: BLE001 - answer each request alone, so only a bad one fails
            return [self._respond(q) for q in queries]
        responses, start = [], 0
        for query in queries:
            stop = start + len(query)
            responses.append(_response(indexes[start:stop], scores[start:stop]))
            start = stop
        return responses

    def _respond(self, query):
        try:
            return _response(*self.index.search(query))
        except QueryError as err:
            return _error(str(err), pb_utils.TritonError.INVALID_ARG)
        except Exception as err:  # noqa: BLE001 - one bad request must not fail the others
            return _error(f"ANN search failed: {type(err).__name__}: {err}")


def _response(indexes, scores):
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("candidate_indexes", indexes),
            pb_utils.Tensor("candidate_scores", scores),
        ]
    )


def _error(message, code=None):
    code = pb_utils.TritonError.INTERNAL if code is None else code
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
