"""The naive way to serve search and recommendations: FastAPI + uvicorn, one request per
model call (no batching across requests), the query encoder in PyTorch eager.

What a user would write: the same all-MiniLM weights in PyTorch (where the release serves a
query student, `builders.query_students`, that student's ONNX file: there is no other
form of it), sentence-transformers-style
dynamic padding (each call's batch padded to its longest query, not to the tokenizer's
`max_length`), torch's default thread count. Tokenizer, retrieval, features, ranker and
top-k run in-process from the repository's own files (builders.offline, the newest release's
pinned stages), so the answers match the served pipeline's and only the serving differs.

`python -m perf.benchmarks.naive --repository model_repository --port 8090`
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from builders import names, text_encoder
from builders.offline import OfflinePipeline
from builders.repository import model_versions
from builders.runtime.tokenization import QueryTokenizer, longest_padding
from builders.specs import parse_pbtxt


def newest(repo: Path, kind: str) -> OfflinePipeline:
    return OfflinePipeline(repo, kind, max(model_versions(repo, kind)))


def warm_up(search: OfflinePipeline, recommend: OfflinePipeline) -> None:
    """Load every stage's session now, so /health answers once the first request is fast."""
    search.run(1, queries=["warm up"], user_ids=[None])
    recommend.run(1, user_ids=[0])


class EagerPipeline(OfflinePipeline):
    """The newest search release with the query encoder in PyTorch eager (or, with
    `encoder="onnx"` or a release that serves a query student, the release's own ONNX
    encoder), both dynamically padded."""

    def __init__(self, repo: Path, encoder: str = "torch") -> None:
        super().__init__(repo, "search", max(model_versions(repo, "search")))
        folder = self.stage_folder("tokenizer")
        config = parse_pbtxt((folder.parent / "config.pbtxt").read_text())
        max_length = int(config["parameters"]["max_length"]["string_value"])
        self.tokenizer = QueryTokenizer(
            folder / "tokenizer.json", max_length, longest_padding(max_length)
        )
        teacher = self.stages["encoder"].model == names.TEXT_ENCODER
        self.encoder = text_encoder.load_reference() if encoder == "torch" and teacher else None

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        ids, mask = self.tokenizer.encode(queries)
        if self.encoder is None:
            inputs = {"input_ids": ids, "attention_mask": mask}
            return self._onnx("encoder", inputs, ["embedding"])[0]
        with torch.inference_mode():
            return self.encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()

    def retrieve(self, queries: list[str] | None = None, user_ids=None):
        """The encoder above, then the release's index (never its composed `retrieval`)."""
        embedding = self.embed_queries(queries)
        return embedding, *self._dense_index(embedding)


class SearchRequest(BaseModel):
    query: str
    user_id: int | None = None
    k: int = Field(10, ge=1)


class RecommendRequest(BaseModel):
    user_id: int
    k: int = Field(10, ge=1)


def answer(result: tuple[np.ndarray, np.ndarray]) -> dict:
    items, scores = result
    return {"item_ids": items.tolist(), "scores": scores.tolist()}


async def bad_request(_: Request, error: ValueError) -> JSONResponse:
    """A query with nothing to search for (and other bad input the stages refuse): 400."""
    return JSONResponse({"error": str(error)}, status_code=400)


def create_app(repo: Path) -> FastAPI:
    search_pipeline = EagerPipeline(repo)
    recommend_pipeline = newest(repo, "recommend")
    warm_up(search_pipeline, recommend_pipeline)
    # One request at a time: FastAPI runs `def` endpoints on a thread pool, and concurrent
    # calls oversubscribe torch's threads (one per core by default): 49.5 vs 60.6 req/s
    # at concurrency 8 on 2 cores.
    lock = threading.Lock()
    app = FastAPI()
    app.add_exception_handler(ValueError, bad_request)

    @app.post("/search")
    def search(request: SearchRequest) -> dict:
        query, user = [request.query], [request.user_id]
        with lock:
            return answer(search_pipeline.run(request.k, queries=query, user_ids=user)[0])

    @app.post("/recommend")
    def recommend(request: RecommendRequest) -> dict:
        with lock:
            return answer(recommend_pipeline.run(request.k, user_ids=[request.user_id])[0])

    @app.get("/health")
    def health() -> dict:
        return {"ok": True, "torch_threads": torch.get_num_threads()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.benchmarks.naive", description=__doc__)
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    app = create_app(Path(args.repository).resolve())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
