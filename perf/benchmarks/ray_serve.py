"""Search and recommendations on Ray Serve with `@serve.batch`: the batching baseline a Ray
user would write, with the same HTTP API as perf.benchmarks.naive.

One replica runs the same pipeline as perf.benchmarks.naive (the newest release's pinned stages from
the repository's own files, builders.offline), but on a batch of concurrent requests at a
time: the query encoder in PyTorch eager with dynamic padding (each batch padded to its
longest query), as a Ray user serving a sentence-transformers model writes it (`--encoder
onnx` runs the release's own ONNX encoder instead); tokenizer, retrieval, features, ranker
and top-k from builders.offline on the whole batch. The batch runs on the replica's event
loop, as Ray's examples do: requests arriving meanwhile wait in Ray's (C++) queue and form
the next batch. (Run on a worker thread instead, the encoder's Python held the GIL against
the loop: requests then reached the batch queue one by one, batches were of 1 or 2 and
throughput was half.) Needs the Ray environment (`make ray-env`):

`build/ray-venv/bin/python -m perf.benchmarks.ray_serve --repository model_repository --port 8091`
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run
# time, and the deployment class reaches the replica pickled by value (this is `__main__`).
import argparse
import os
import signal
import threading
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network call at start-up

import ray  # noqa: E402
import torch  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from ray import serve  # noqa: E402

from perf.benchmarks.naive import (  # noqa: E402
    EagerPipeline,
    RecommendRequest,
    SearchRequest,
    answer,
    bad_request,
    newest,
    warm_up,
)

# At most 32 requests a batch: in process on 2 cores a search batch of 32 gave about 3x the
# queries/s of a batch of 8 but took over 100 ms; larger batches would push single batches
# toward the bench's p99 SLO (150 ms). Waiting at most 5 ms for a batch to fill costs little
# next to a batch's compute; under load the next batch fills while one runs.
MAX_BATCH_SIZE = 32
BATCH_WAIT_S = 0.005

app = FastAPI()
app.add_exception_handler(ValueError, bad_request)


def run_batch(pipeline, ks: list[int], **inputs) -> list:
    """One pipeline call for the batch (at the largest k; each request keeps its own k best,
    a prefix since ties keep retrieval order). A batch that a bad request fails is retried
    request by request, so the bad one fails alone (its error is returned, not raised)."""
    try:
        results = pipeline.run(max(ks), **inputs)
    except ValueError as error:
        if len(ks) == 1:
            return [error]
        return [
            run_batch(pipeline, [k], **{key: [values[i]] for key, values in inputs.items()})[0]
            for i, k in enumerate(ks)
        ]
    return [answer((items[:k], scores[:k])) for (items, scores), k in zip(results, ks)]


def raised(result):
    if isinstance(result, Exception):
        raise result
    return result


@serve.deployment(num_replicas=1, max_ongoing_requests=256)
@serve.ingress(app)
class Baseline:
    def __init__(self, repo: str, encoder: str, max_batch_size: int, batch_wait_s: float) -> None:
        self.search_pipeline = EagerPipeline(Path(repo), encoder)
        self.recommend_pipeline = newest(Path(repo), "recommend")
        warm_up(self.search_pipeline, self.recommend_pipeline)
        for method in (self.search_batch, self.recommend_batch):
            method.set_max_batch_size(max_batch_size)
            method.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def search_batch(self, requests: list[SearchRequest]) -> list:
        return run_batch(
            self.search_pipeline,
            [r.k for r in requests],
            queries=[r.query for r in requests],
            user_ids=[r.user_id for r in requests],
        )

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def recommend_batch(self, requests: list[RecommendRequest]) -> list:
        return run_batch(
            self.recommend_pipeline,
            [r.k for r in requests],
            user_ids=[r.user_id for r in requests],
        )

    @app.post("/search")
    async def search(self, request: SearchRequest) -> dict:
        return raised(await self.search_batch(request))

    @app.post("/recommend")
    async def recommend(self, request: RecommendRequest) -> dict:
        return raised(await self.recommend_batch(request))

    @app.get("/health")
    def health(self) -> dict:
        return {"ok": True, "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m perf.benchmarks.ray_serve", description=__doc__
    )
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--encoder", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE)
    parser.add_argument("--batch-wait-ms", type=float, default=BATCH_WAIT_S * 1000)
    args = parser.parse_args()

    stop = threading.Event()

    def on_signal(*_) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # A cluster of its own (never one a `ray start` left running), light on 2 cores.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    # Ours again, in case ray.init installed its own.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        # The replica gets both cores: Ray sets OMP_NUM_THREADS to an actor's num_cpus, so
        # torch keeps its default thread count (one per core).
        deployment = Baseline.options(ray_actor_options={"num_cpus": 2}).bind(
            str(Path(args.repository).resolve()),
            args.encoder,
            args.max_batch_size,
            args.batch_wait_ms / 1000,
        )
        serve.run(deployment, route_prefix="/", logging_config={"log_level": "WARNING"})
        print(f"ray serve: listening on http://127.0.0.1:{args.port}", flush=True)
        while not stop.wait(1):
            pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
