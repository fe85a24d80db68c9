"""Triton Python-backend model: approximate nearest-neighbour retrieval with FAISS.

Copied as `model.py` into a version folder next to `ann_index.py`, `stage_glue.py`,
`index.faiss`, `ann.json` (the tuned parameters) and `item_ids.npy` (catalog position ->
item id).
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

VERSION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(VERSION_DIR))

import stage_glue  # noqa: E402
from ann_index import AnnIndex, QueryError  # noqa: E402


class TritonPythonModel:
    name = "ANN search"
    inputs = ("query_embedding",)
    outputs = ("candidate_indexes", "candidate_scores")
    invalid = QueryError

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
        return stage_glue.execute(requests, self)

    def answer(self, group: list[dict]) -> list:
        queries = stage_glue.stack(group)["query_embedding"]
        return stage_glue.split(group, *self.index.search(queries))
