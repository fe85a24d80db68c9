"""LightGBM rankers beside DCN-v2: LambdaMART for search, a binary classifier for recommend.

Trained on the same groups as `builders.ranker` (the features `ranker_inputs` serves) and
served in the ranker's place with the same interface: `model.onnx` takes `sparse` INT64
[batch, N, S] and `dense` FP32 [batch, N, D] and gives `score` FP32 [batch, N]. The trees are
converted by onnxmltools and wrapped in a graph that picks the ranker's feature columns,
flattens the candidate grid to rows and back. The LightGBM text model travels beside it as
`model.txt`.

Why ONNX and not Triton's FIL backend: FIL takes one FP32 input `input__0` [rows, features]
whose batch dimension is the rows, and an ensemble step hands a ranker one request's
[1, N, S] and [1, N, D] tensors. A FIL ranker would need another Python step (a process hop)
to flatten them; the ONNX graph does it inside the ranker's own step, on every profile.

The functions that load and check a LightGBM model file (`load_booster`,
`check_features`, `export_onnx`) are plain, for any caller that brings its own model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from builders.ranker import ALL_FEATURES, Examples, auc, check_parity, parity_inputs
from builders.ranking_metrics import ndcg
from builders.runtime.features import NUM_DENSE, NUM_SPARSE

#: LightGBM objective of each ranker: a ranking objective for search sessions, click
#: probabilities for recommend (as the DCN's `score`).
OBJECTIVES = {"search": "lambdarank", "recommend": "binary"}
#: Largest allowed |ONNX - LightGBM| on `score`.
ONNX_ATOL = 1e-5
#: onnxmltools converts LightGBM up to this ONNX opset.
ONNX_OPSET = 15
PARAMETERS = {
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "lambdarank_truncation_level": 10,
    "num_threads": 1,  # small models; like the DCN, one thread does not stall shared cores
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
ROUNDS = 200
#: Scores a ranker must never rank against (constrained non-decreasing): the retrieval
#: scores. Unconstrained (synthetic data, 2026-12-05), LambdaMART learned from the few items
#: each logged session saw and ordered 100 retrieved candidates worse (graded NDCG@10 0.861
#: against 0.902), and the recommend model learned the negative sampling (half the negatives
#: are top retrieved items) rather than the users (held-out AUC 0.919 against 0.882).
MONOTONE_FEATURES = ("retrieval_score", "lexical_score")
MODEL_FILE = "model.txt"


class ModelFileError(ValueError):
    """A LightGBM model file that cannot serve as this ranker: unreadable, or built for
    other features."""


@dataclass
class GbdtResult:
    booster: lgb.Booster
    objective: str
    uses: tuple[str, ...]
    metrics: dict[str, float]


def feature_names(uses: Sequence[str]) -> tuple[str, ...]:
    """The model's columns: the features in `uses`, in `ALL_FEATURES` order."""
    unknown = sorted(set(uses) - set(ALL_FEATURES))
    if unknown:
        raise ValueError(f"unknown ranker features {unknown}; features: {ALL_FEATURES}")
    return tuple(name for name in ALL_FEATURES if name in uses)


def rows(examples: Examples, uses: Sequence[str]) -> np.ndarray:
    """float32 [groups * N, F]: every candidate's `uses` columns, as the ONNX graph takes them."""
    columns = [ALL_FEATURES.index(name) for name in feature_names(uses)]
    grid = np.concatenate([examples.sparse.astype(np.float32), examples.dense], axis=-1)
    return grid[..., columns].reshape(-1, len(columns))


def train(
    kind: str,
    train_examples: Examples,
    test_examples: Examples,
    uses: Sequence[str] = ALL_FEATURES,
    *,
    seed: int = 0,
) -> GbdtResult:
    """Fit the `kind` ("search" or "recommend") ranker on the real (weight > 0) candidates of
    `train_examples`, one LambdaMART query per group, and measure it on `test_examples`."""
    objective = OBJECTIVES[kind]
    uses = feature_names(uses)
    real = train_examples.loss_weights.reshape(-1) > 0
    if not real.any():
        raise ValueError("no training candidates to learn from")
    data = lgb.Dataset(
        rows(train_examples, uses)[real],
        train_examples.labels.reshape(-1)[real].astype(np.int32),
        group=(train_examples.loss_weights > 0).sum(axis=1) if objective == "lambdarank" else None,
        feature_name=list(uses),
        free_raw_data=True,
    )
    monotone = [1 if name in MONOTONE_FEATURES else 0 for name in uses]
    settings = {**PARAMETERS, "objective": objective, "seed": seed}
    booster = lgb.train({**settings, "monotone_constraints": monotone}, data, ROUNDS)
    result = GbdtResult(booster, objective, uses, {})
    result.metrics = {
        "objective": objective,
        "rounds": ROUNDS,
        **held_out_metrics(test_examples, predict(result, test_examples)),
    }
    return result


def predict(result: GbdtResult, examples: Examples) -> np.ndarray:
    """Scores [groups, N] as `model.onnx` gives them."""
    flat = result.booster.predict(rows(examples, result.uses))
    return flat.reshape(examples.labels.shape).astype(np.float32)


def scores_of(result: GbdtResult) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The model's scores for `sparse`, `dense` grids [groups, N, ·], [groups, N]."""

    def score(sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
        return predict(result, Examples(sparse, dense, np.zeros(sparse.shape[:2], np.float32)))

    return score


def held_out_metrics(examples: Examples, scores: np.ndarray) -> dict[str, float]:
    """AUC over every real candidate and the mean NDCG@10 of the groups with an engaged
    candidate (the candidates of one group ranked by `scores`)."""
    real = examples.loss_weights > 0
    if len(examples.labels) == 0:
        return {"auc": float("nan"), "group_ndcg_at_10": float("nan")}
    values = []
    for labels, group_scores, kept in zip(examples.labels, scores, real):
        labels, group_scores = labels[kept], group_scores[kept]
        if labels.max() <= 0:
            continue
        order = np.argsort(-group_scores, kind="stable")
        grades = {i: int(label) for i, label in enumerate(labels) if label > 0}
        values.append(ndcg(order.tolist(), grades, 10))
    return {
        "auc": auc(examples.labels[real], scores[real]),
        "group_ndcg_at_10": float(np.mean(values)) if values else float("nan"),
    }


def load_booster(path: str | Path) -> lgb.Booster:
    """A LightGBM text model from `path`; ModelFileError names the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such LightGBM model file")
    try:
        return lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as err:
        raise ModelFileError(f"{path}: not a LightGBM text model ({err})") from None


def check_features(booster: lgb.Booster, expected: Sequence[str], what: str = "ranker") -> None:
    """Refuse a model whose input columns are not `expected` (count, names and order), with a
    message that names the difference."""
    found, expected = tuple(booster.feature_name()), tuple(expected)
    if found == expected:
        return
    missing = [name for name in expected if name not in found]
    unknown = [name for name in found if name not in expected]
    parts = [f"the model has {len(found)} features, {what} computes {len(expected)}"]
    if missing:
        parts.append(f"missing: {', '.join(missing)}")
    if unknown:
        parts.append(f"not computed here: {', '.join(unknown)}")
    if not missing and not unknown:
        parts = [f"the model's features are in another order: {', '.join(found)}"]
    raise ModelFileError(
        f"LightGBM model does not match the features of {what} "
        f"({', '.join(expected)}): {'; '.join(parts)}"
    )


def objective_of(booster: lgb.Booster) -> str:
    """The objective a model was trained with (its first word: `binary`, `lambdarank`, ...)."""
    return str(booster.dump_model(num_iteration=1)["objective"]).split()[0]


def float32_thresholds(booster: lgb.Booster) -> lgb.Booster:
    """`booster` with every numerical split's threshold lowered to the largest float32 at or
    below it: the same decisions for every float32 input (no float32 lies between the two),
    and thresholds that ONNX's float32 trees hold exactly. Converted as they are, a threshold
    rounds to the nearest float32, which may be the very feature value LightGBM split just
    below, and that value then takes the other branch (seen on the default build: 0.00615
    apart on a search score)."""
    # Without `tree_sizes` (each tree's length in bytes) LightGBM reads the trees in order.
    lines = [
        line
        for line in booster.model_to_string().splitlines()
        if not line.startswith("tree_sizes=")
    ]
    threshold_line = 0  # where the current tree's thresholds are
    for number, line in enumerate(lines):
        if line.startswith("threshold="):
            threshold_line = number
        elif line.startswith("decision_type="):  # a tree's kinds of split follow its thresholds
            kinds = [int(value) for value in line.split("=", 1)[1].split()]
            values = lines[threshold_line].split("=", 1)[1].split()
            lines[threshold_line] = "threshold=" + " ".join(
                value if kind & 1 else repr(float(_float32_at_most(float(value))))
                for value, kind in zip(values, kinds, strict=True)
            )
    return lgb.Booster(model_str="\n".join(lines) + "\n")


def _float32_at_most(value: float) -> np.float32:
    nearest = np.float32(value)
    return nearest if float(nearest) <= value else np.nextafter(nearest, np.float32(-np.inf))


def onnx_model(booster: lgb.Booster, uses: Sequence[str]) -> onnx.ModelProto:
    """The ranker graph: `sparse`, `dense` [batch, N, ·] -> the `uses` columns as rows ->
    the trees -> `score` [batch, N]. Binary models score the positive class's probability,
    others their raw score."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    uses = feature_names(uses)
    check_features(booster, uses)
    trees = convert_lightgbm(
        float32_thresholds(booster),
        initial_types=[("features", FloatTensorType([None, len(uses)]))],
        zipmap=False,
        target_opset=ONNX_OPSET,
    )
    outputs = [output.name for output in trees.graph.output]
    binary = objective_of(booster) == "binary"
    tree_score = outputs[-1] if binary else outputs[0]  # probabilities [rows, 2] or [rows, 1]
    columns = [ALL_FEATURES.index(name) for name in uses]
    constants = [
        helper.make_tensor("columns", TensorProto.INT64, [len(columns)], columns),
        helper.make_tensor("row_shape", TensorProto.INT64, [2], [-1, len(columns)]),
        helper.make_tensor("grid_start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("grid_end", TensorProto.INT64, [1], [2]),
        helper.make_tensor("positive", TensorProto.INT64, [], [1 if binary else 0]),
    ]
    before = [
        helper.make_node("Cast", ["sparse"], ["sparse_float"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["sparse_float", "dense"], ["grid"], axis=-1),
        helper.make_node("Gather", ["grid", "columns"], ["picked"], axis=2),
        helper.make_node("Reshape", ["picked", "row_shape"], ["features"]),
    ]
    after = [
        helper.make_node("Gather", [tree_score, "positive"], ["row_scores"], axis=1),
        helper.make_node("Shape", ["dense"], ["dense_shape"]),
        helper.make_node("Slice", ["dense_shape", "grid_start", "grid_end"], ["grid_shape"]),
        helper.make_node("Reshape", ["row_scores", "grid_shape"], ["score"]),
    ]
    graph = helper.make_graph(
        [*before, *trees.graph.node, *after],
        "lightgbm_ranker",
        [
            helper.make_tensor_value_info("sparse", TensorProto.INT64, [None, None, NUM_SPARSE]),
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, [None, None, NUM_DENSE]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, None])],
        [*trees.graph.initializer, *constants],
    )
    opsets = {entry.domain: entry.version for entry in trees.opset_import}
    opsets[""] = max(opsets.get("", 0), ONNX_OPSET)  # Slice takes its bounds as inputs
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(domain, v) for domain, v in opsets.items()]
    )
    model.ir_version = trees.ir_version
    onnx.checker.check_model(model)
    return model


def export_onnx(
    booster: lgb.Booster,
    uses: Sequence[str],
    folder: str | Path,
    samples: Sequence[Examples],
    vocabulary_sizes: Sequence[int],
) -> dict:
    """Write `model.onnx` and `model.txt` into `folder` and check the ONNX scores against
    LightGBM's within ONNX_ATOL on `samples` (held-out groups) and random in-vocabulary
    inputs. The model's features are checked before anything is written."""
    uses = feature_names(uses)
    model = onnx_model(booster, uses)
    folder = Path(folder)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    checked = [*samples, *parity_inputs(vocabulary_sizes)]
    differences = []
    for sample in checked:
        if sample.labels.size == 0:
            continue
        (exported,) = session.run(["score"], {"sparse": sample.sparse, "dense": sample.dense})
        expected = booster.predict(rows(sample, uses)).reshape(sample.labels.shape)
        differences.append(float(np.abs(exported - expected).max()))
    result = check_parity("ONNX ranker vs LightGBM", max(differences), ONNX_ATOL)
    onnx.save(model, str(folder / "model.onnx"))
    booster.save_model(str(folder / MODEL_FILE))
    shapes = [list(sample.labels.shape) for sample in checked]
    return {**result, "shapes": shapes, "features": list(uses)}


def choose(kind: str, dcn: dict[str, float], lambdamart: dict[str, float]) -> str:
    """The better ranker by the held-out figure the build compares: for search NDCG@10 on
    the graded queries where both have it (`graded_ndcg_at_10`, what users see), else on
    the held-out sessions; AUC for recommend. DCN-v2 on a tie or where a figure is missing."""
    graded = "graded_ndcg_at_10" in dcn and "graded_ndcg_at_10" in lambdamart
    key = "auc" if kind != "search" else "graded_ndcg_at_10" if graded else "group_ndcg_at_10"
    if lambdamart.get(key, float("nan")) > dcn.get(key, float("nan")):
        return "lambdamart"
    return "dcn"
