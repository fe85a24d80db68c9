"""The models of the repository: their names and config specs (the CPU defaults).

Tensor names and shapes here are the contract between the stages; the pipeline
ensembles (`search`, `recommend`, `builders.pipelines`) wire the stages by these names,
and `SEARCH_INPUTS`, `RECOMMEND_INPUTS` and `PIPELINE_OUTPUTS` are what clients send
and get.
"""

from __future__ import annotations

from collections.abc import Mapping

from builders.runtime import features
from builders.specs import DynamicBatching, ModelSpec, TensorSpec

QUERY_TOKENIZER = "query_tokenizer"
TEXT_ENCODER = "text_encoder"
QUERY_ENCODER_STATIC = "query_encoder_static"
QUERY_ENCODER_ONE_LAYER = "query_encoder_one_layer"
QUERY_ENCODER_SHALLOW = "query_encoder_shallow"
SEARCH_INDEX = "search_index"
SEARCH_RETRIEVAL = "search_retrieval"
HYBRID_RETRIEVAL = "hybrid_retrieval"
SEARCH_QUERY = "search_query"
RANKING_FEATURES = "ranking_features"
SEARCH_RANKER = "search_ranker"
USER_TOWER = "user_tower"
RECOMMEND_INDEX = "recommend_index"
RECOMMEND_RETRIEVAL = "recommend_retrieval"
RECOMMEND_RANKER = "recommend_ranker"
TOP_K = "top_k"
SEARCH_RANKING = "search_ranking"
RECOMMEND_RANKING = "recommend_ranking"
SEARCH = "search"
RECOMMEND = "recommend"

#: Build order: each model may read those before it from the repository.
ALL_MODELS = (
    QUERY_TOKENIZER,
    TEXT_ENCODER,
    QUERY_ENCODER_STATIC,
    QUERY_ENCODER_ONE_LAYER,
    QUERY_ENCODER_SHALLOW,
    SEARCH_INDEX,
    HYBRID_RETRIEVAL,
    RANKING_FEATURES,
    USER_TOWER,
    RECOMMEND_INDEX,
    SEARCH_RANKER,
    RECOMMEND_RANKER,
    TOP_K,
    SEARCH,
    RECOMMEND,
)
#: The query encoder's variants, the teacher (which also embeds the items) first, then the
#: students distilled into its space (`builders.query_students`): built, measured and gated
#: together (`builders.encoder_variants`).
QUERY_ENCODERS = (
    TEXT_ENCODER,
    QUERY_ENCODER_STATIC,
    QUERY_ENCODER_ONE_LAYER,
    QUERY_ENCODER_SHALLOW,
)
#: What `BuildOptions.encoder` takes besides a variant: the fastest one that passes the gate.
AUTO_ENCODER = "auto"
#: Models built from the interaction log (absent for a catalog-only dataset).
NEED_INTERACTIONS = (
    RANKING_FEATURES,
    USER_TOWER,
    RECOMMEND_INDEX,
    SEARCH_RANKER,
    RECOMMEND_RANKER,
    RECOMMEND,
)
#: Models whose content depends on the data (their data fingerprint must match the build's).
DATA_DEPENDENT = (SEARCH_INDEX, HYBRID_RETRIEVAL, *NEED_INTERACTIONS, TOP_K, SEARCH)

#: Largest batch a stage takes (at least the pipelines' own, so a whole batch passes).
STAGE_MAX_BATCH = 64
PIPELINE_MAX_BATCH = 32
#: The query the tokenizer's warm-up request sends (an empty one would be refused).
WARMUP_QUERY = "red running shoes"
#: The `k` the top_k step's warm-up request asks for (k < 1 is refused).
WARMUP_K = 10


#: The search stages whose outputs depend on the query alone, not on the user: with a
#: response cache on the server, Triton answers a repeated query at each of them without
#: running it (personalised or not: each user's results still get their own ranking).
QUERY_ONLY_STAGES = (
    QUERY_TOKENIZER,
    *QUERY_ENCODERS,
    SEARCH_INDEX,
    SEARCH_RETRIEVAL,
    HYBRID_RETRIEVAL,
    SEARCH_QUERY,
)
#: A release's exact index served inside its producer's graph (`retrieval.compose_retrieval`),
#: by pipeline kind; written with each release, at the release's version.
RETRIEVAL_OF = {SEARCH: SEARCH_RETRIEVAL, RECOMMEND: RECOMMEND_RETRIEVAL}
#: A release's features, ranker and top-k in one Python model (cpu profile), by pipeline kind.
RANKING_OF = {SEARCH: SEARCH_RANKING, RECOMMEND: RECOMMEND_RANKING}
#: The models a release writes from the stages it pins, at the release's version: the
#: `RETRIEVAL_OF` graphs and, in the cpu profile, search's query stage (`SEARCH_QUERY`) and
#: the `RANKING_OF` stages.
COMPOSED_STAGES = (*RETRIEVAL_OF.values(), SEARCH_QUERY, *RANKING_OF.values())


#: The p99 latency SLO (ms) of a pipeline call: what the benchmarks measure throughput at
#: (`perf.benchmarks.bench --slo-ms`) and the reliability suite holds the pipelines to.
SLO_MS = 100.0


def _batching(delay_us: int = 1000) -> DynamicBatching:
    """A stage's dynamic batcher. Its queue is unbounded unless a build asks for bounds
    (`BuildOptions.slo_ms`): see `specs.QueuePolicy` for why."""
    return DynamicBatching(max_queue_delay_microseconds=delay_us)


def query_tokenizer_spec(max_length: int, buckets: tuple[int, ...] = ()) -> ModelSpec:
    return ModelSpec(
        name=QUERY_TOKENIZER,
        backend="python",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=(TensorSpec("query", "STRING", (1,), warmup_value=WARMUP_QUERY),),
        outputs=(
            TensorSpec("input_ids", "INT64", (-1,)),
            TensorSpec("attention_mask", "INT64", (-1,)),
        ),
        dynamic_batching=_batching(500),
        response_cache=True,
        parameters={
            "max_length": str(max_length),
            "length_buckets": ",".join(str(width) for width in buckets),
        },
    )


def text_encoder_spec(name: str, dim: int = 384) -> ModelSpec:
    return ModelSpec(
        name=name,
        backend="onnxruntime",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=(
            TensorSpec("input_ids", "INT64", (-1,)),
            TensorSpec("attention_mask", "INT64", (-1,), warmup_value=1),
        ),
        outputs=(TensorSpec("embedding", "FP32", (dim,)),),
        dynamic_batching=_batching(),
        response_cache=name in QUERY_ONLY_STAGES,
    )


def index_spec(name: str, dim: int, num_candidates: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        backend="onnxruntime",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=(TensorSpec("query_embedding", "FP32", (dim,)),),
        outputs=(
            TensorSpec("candidate_indexes", "INT64", (num_candidates,)),
            TensorSpec("candidate_scores", "FP32", (num_candidates,)),
        ),
        dynamic_batching=_batching(500),
        parameters={"intra_op_thread_count": "1"},
        response_cache=name in QUERY_ONLY_STAGES,
    )


def retrieval_spec(name: str, producer: ModelSpec, index: ModelSpec) -> ModelSpec:
    """The producer (query encoder or user tower) and the exact index in one ONNX model:
    the producer's inputs; its embedding, then the index's outputs."""
    return ModelSpec(
        name=name,
        backend="onnxruntime",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=producer.inputs,
        outputs=(*producer.outputs, *index.outputs),
        dynamic_batching=producer.dynamic_batching,
        parameters=producer.parameters,
        response_cache=name in QUERY_ONLY_STAGES,
    )


def ann_index_spec(name: str, dim: int, num_candidates: int) -> ModelSpec:
    """The approximate index (FAISS IVF, a Python model): the exact index's tensor contract.

    The tuned `nprobe` lives in each version's `ann.json` (versions share this config);
    a `nprobe` parameter here would override it for every version.
    """
    exact = index_spec(name, dim, num_candidates)
    return ModelSpec(
        name=name,
        backend="python",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=exact.inputs,
        outputs=exact.outputs,
        dynamic_batching=_batching(500),
        parameters={"omp_threads": "1", "device": "auto"},
        response_cache=exact.response_cache,
    )


def hybrid_retrieval_spec(num_candidates: int, dim: int) -> ModelSpec:
    """BM25 over the item texts and its fusion with the dense candidates, one Python model
    (`runtime.hybrid_model`; each version's fusion settings are in its `fusion.json`)."""
    return ModelSpec(
        name=HYBRID_RETRIEVAL,
        backend="python",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=(
            TensorSpec("query", "STRING", (1,), warmup_value=WARMUP_QUERY),
            TensorSpec("dense_indexes", "INT64", (-1,)),
            TensorSpec("dense_scores", "FP32", (-1,)),
            TensorSpec("query_embedding", "FP32", (dim,)),
        ),
        outputs=fused_candidates(num_candidates),
        dynamic_batching=_batching(500),
        response_cache=True,
    )


def fused_candidates(num_candidates: int) -> tuple[TensorSpec, ...]:
    """The hybrid candidates, in fused order: their indexes, fused, dense and lexical scores."""
    return (
        TensorSpec("candidate_indexes", "INT64", (num_candidates,)),
        TensorSpec("candidate_scores", "FP32", (num_candidates,)),
        TensorSpec("candidate_dense_scores", "FP32", (num_candidates,)),
        TensorSpec("candidate_lexical_scores", "FP32", (num_candidates,)),
    )


def search_query_spec(num_candidates: int, tokenizer_parameters: Mapping[str, str]) -> ModelSpec:
    """A search release's tokenizer, query encoder with its exact index, and hybrid retrieval
    in one Python model (`runtime.query_model`): the query in, the hybrid stage's candidates
    out; the tokenizer's parameters, and the encoder's batching (the costly part).
    `intra_op_thread_count` sets ONNX Runtime's threads (0: its default)."""
    return ModelSpec(
        name=SEARCH_QUERY,
        backend="python",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=(TensorSpec("query", "STRING", (1,), warmup_value=WARMUP_QUERY),),
        outputs=fused_candidates(num_candidates),
        dynamic_batching=_batching(),
        parameters={**tokenizer_parameters, "intra_op_thread_count": "0"},
        response_cache=True,
    )


def ranking_features_spec() -> ModelSpec:
    return ModelSpec(
        name=RANKING_FEATURES,
        backend="python",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=(
            TensorSpec("user_id", "INT64", (1,), optional=True),
            TensorSpec("candidate_ids", "INT64", (-1,)),
            TensorSpec("candidate_scores", "FP32", (-1,)),
            TensorSpec("lexical_scores", "FP32", (-1,), optional=True),
        ),
        outputs=(
            TensorSpec("sparse", "INT64", (-1, features.NUM_SPARSE)),
            TensorSpec("dense", "FP32", (-1, features.NUM_DENSE)),
        ),
        dynamic_batching=_batching(500),
    )


def ranker_spec(name: str, backend: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        backend=backend,
        max_batch_size=STAGE_MAX_BATCH,
        inputs=(
            TensorSpec("sparse", "INT64", (-1, features.NUM_SPARSE)),
            TensorSpec("dense", "FP32", (-1, features.NUM_DENSE)),
        ),
        outputs=(TensorSpec("score", "FP32", (-1,)),),
        dynamic_batching=_batching(),
    )


def ranking_spec(name: str, retrieves: bool = False) -> ModelSpec:
    """A release's features, ranker and top-k in one Python model (`runtime.ranking_model`):
    the features stage's inputs and `k` in, the pipelines' answer out; the ranker's batching
    (the costly part). `intra_op_thread_count` sets the ranker's threads (0: the framework's
    default). With `retrieves` (recommend's exact retrieval graph inside too), the pipeline's
    own inputs in: `user_id` and `k`."""
    features_spec, top_k = ranking_features_spec(), top_k_spec()
    k = tuple(t for t in top_k.inputs if t.name == "k")
    return ModelSpec(
        name=name,
        backend="python",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=RECOMMEND_INPUTS if retrieves else (*features_spec.inputs, *k),
        outputs=top_k.outputs,
        dynamic_batching=_batching(),
        parameters={"intra_op_thread_count": "0"},
    )


def user_tower_spec(dim: int) -> ModelSpec:
    return ModelSpec(
        name=USER_TOWER,
        backend="onnxruntime",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=(TensorSpec("user_id", "INT64", (1,)),),
        outputs=(TensorSpec("user_embedding", "FP32", (dim,)),),
        dynamic_batching=_batching(500),
        parameters={"intra_op_thread_count": "1"},
    )


#: The entry points' contract: what a client sends and gets back (one request per call).
#: (An ensemble takes no warm-up; the values serve a model that stands in for a pipeline.)
SEARCH_INPUTS = (
    TensorSpec("query", "STRING", (1,), warmup_value=WARMUP_QUERY),
    TensorSpec("user_id", "INT64", (1,), optional=True),
    TensorSpec("k", "INT32", (1,), warmup_value=WARMUP_K),
)
RECOMMEND_INPUTS = (
    TensorSpec("user_id", "INT64", (1,)),
    TensorSpec("k", "INT32", (1,), warmup_value=WARMUP_K),
)
PIPELINE_OUTPUTS = (
    TensorSpec("item_ids", "INT64", (-1,)),
    TensorSpec("scores", "FP32", (-1,)),
    TensorSpec("truncated", "BOOL", (1,)),
)


def top_k_spec() -> ModelSpec:
    """The last step of both pipelines: checks `k`, orders, maps indexes to item ids."""
    return ModelSpec(
        name=TOP_K,
        backend="python",
        max_batch_size=STAGE_MAX_BATCH,
        inputs=(
            TensorSpec("candidate_indexes", "INT64", (-1,)),
            TensorSpec("candidate_scores", "FP32", (-1,)),
            TensorSpec("k", "INT32", (1,), warmup_value=WARMUP_K),
        ),
        outputs=PIPELINE_OUTPUTS,
        dynamic_batching=_batching(500),
    )
