"""A team's own models as build inputs: the build file, its checks, and their conversion to
the stages' contracts.

The build file (YAML, `python -m builders build --models-file FILE`) names up to four
models; relative paths are read from the file's folder:

* `encoder`: a sentence-transformers or Hugging Face BERT-family folder (config.json,
  weights, tokenizer.json). It replaces the packaged teacher: it is exported to ONNX with its
  own pooling (`1_Pooling/config.json`: mean, cls or max; mean without one) and
  normalisation (a `Normalize` module or `2_Normalize` folder), its tokenizer is the
  tokenizer stage's, and the students and the quality gate apply to it
  (`builders.text_encoder.source`).
* `search_ranker`, `recommend_ranker`: an ONNX, TorchScript or LightGBM text model
  (`builders.gbdt`; one input, its features in the repository's order) with its declared
  `inputs`: each a name, a dtype (float32 or int64) and the ranking features it reads, in
  order (`builders.runtime.features`: SPARSE_FEATURES and DENSE_FEATURES), as a tensor
  [batch, candidates, len(features)]; and the `output` [batch, candidates] (or
  [batch, candidates, 1]) it scores with. The model is wrapped in ONNX so that it reads the
  features stage's `sparse` and `dense` tensors and answers `score`.
* `two_tower`: a user tower (ONNX: a user id INT64 [batch, 1] to an embedding FP32
  [batch, dim]; any user id, unknown ones included) and item embeddings keyed by item id
  (`.npz` with arrays item_ids and embeddings, or `.parquet` with columns item_id and
  embedding); every catalog item needs one and every id must be in the catalog.

`prepare` loads, checks, converts and scores each model against its source framework into a
folder before the build writes anything; every mistake is an `OwnModelError` naming the
model and the key.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from builders import names
from builders.runtime.features import DENSE_FEATURES, SPARSE_FEATURES

#: Largest |ONNX Runtime - source framework| allowed on a ranker's scores and a user tower's
#: embeddings (the encoder's is `text_encoder.ONNX_ATOL`).
RANKER_ATOL = 1e-5
TOWER_ATOL = 1e-5
RANKER_FORMATS = ("onnx", "torchscript", "lightgbm")
#: The framework each format's scores are checked against.
SOURCE_FRAMEWORKS = {"onnx": "onnxruntime", "torchscript": "torch", "lightgbm": "lightgbm"}
#: The file suffix each format is recognised by when `format` is not given.
SUFFIXES = {".onnx": "onnx", ".txt": "lightgbm"}
DTYPES = ("float32", "int64")
POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}
#: Requests and candidates of the sample each ranker is scored on.
SAMPLE_REQUESTS = 4
SAMPLE_CANDIDATES = 16


class OwnModelError(ValueError):
    """A team's model or its declaration is wrong; nothing was written."""


# -- the spec -----------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderSpec:
    path: Path


@dataclass(frozen=True)
class RankerInput:
    name: str
    features: tuple[str, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class RankerSpec:
    path: Path
    inputs: tuple[RankerInput, ...]
    output: str = "score"
    #: onnx, torchscript or lightgbm; empty: by the file's suffix (.onnx, .txt, other).
    format: str = ""

    @property
    def kind(self) -> str:
        return self.format or SUFFIXES.get(self.path.suffix.lower(), "torchscript")


@dataclass(frozen=True)
class TwoTowerSpec:
    user_tower: Path
    item_embeddings: Path
    input: str = "user_id"  # the tower's input and output names
    output: str = "user_embedding"


@dataclass(frozen=True)
class OwnModels:
    encoder: EncoderSpec | None = None
    search_ranker: RankerSpec | None = None
    recommend_ranker: RankerSpec | None = None
    two_tower: TwoTowerSpec | None = None

    @property
    def rankers(self) -> dict[str, RankerSpec]:
        """Model name -> ranker spec, for those given."""
        given = {names.SEARCH_RANKER: self.search_ranker}
        given[names.RECOMMEND_RANKER] = self.recommend_ranker
        return {name: spec for name, spec in given.items() if spec is not None}

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


def _mapping(value, key: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise OwnModelError(f"{key}: expected a mapping, got {type(value).__name__}")
    return value


def _keys(data: Mapping, key: str, required: tuple[str, ...], optional: tuple[str, ...]):
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise OwnModelError(
            f"{key}: unknown key(s) {', '.join(map(str, unknown))}; "
            f"allowed: {', '.join(required + optional)}"
        )
    missing = [name for name in required if name not in data]
    if missing:
        raise OwnModelError(f"{key}: missing key(s) {', '.join(f'{key}.{m}' for m in missing)}")


def _string(data: Mapping, key: str, name: str, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or not value:
        raise OwnModelError(f"{key}.{name}: expected a non-empty string, got {value!r}")
    return value


def _file(data: Mapping, key: str, name: str, base: Path, folder: bool = False) -> Path:
    path = base / _string(data, key, name)
    if not (path.is_dir() if folder else path.is_file()):
        raise OwnModelError(f"{key}.{name}: no such {'folder' if folder else 'file'}: {path}")
    return path


def parse_encoder(data, base: Path, key: str = "encoder") -> EncoderSpec:
    data = _mapping(data, key)
    _keys(data, key, ("path",), ())
    return EncoderSpec(_file(data, key, "path", base, folder=True))


def parse_ranker(data, base: Path, key: str) -> RankerSpec:
    data = _mapping(data, key)
    _keys(data, key, ("path", "inputs"), ("output", "format"))
    kind = data.get("format", "")
    if kind and kind not in RANKER_FORMATS:
        raise OwnModelError(f"{key}.format: {kind!r} is not one of {', '.join(RANKER_FORMATS)}")
    inputs = data["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise OwnModelError(f"{key}.inputs: expected a non-empty list of inputs")
    return RankerSpec(
        path=_file(data, key, "path", base),
        inputs=tuple(parse_input(item, f"{key}.inputs[{i}]") for i, item in enumerate(inputs)),
        output=_string(data, key, "output", "score"),
        format=kind,
    )


def parse_input(data, key: str) -> RankerInput:
    data = _mapping(data, key)
    _keys(data, key, ("name", "features"), ("dtype",))
    dtype = data.get("dtype", "float32")
    if dtype not in DTYPES:
        raise OwnModelError(f"{key}.dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    return RankerInput(_string(data, key, "name"), check_features(data["features"], key), dtype)


def check_features(value, key: str) -> tuple[str, ...]:
    """A declared feature list: known ranking features, each once."""
    known = (*SPARSE_FEATURES, *DENSE_FEATURES)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise OwnModelError(f"{key}.features: expected a non-empty list of feature names")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise OwnModelError(
            f"{key}.features: unknown feature(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    if len(set(value)) != len(value):
        raise OwnModelError(f"{key}.features: a feature is listed twice: {value}")
    return tuple(value)


def parse_two_tower(data, base: Path, key: str = "two_tower") -> TwoTowerSpec:
    data = _mapping(data, key)
    _keys(data, key, ("user_tower", "item_embeddings"), ("input", "output"))
    embeddings = _file(data, key, "item_embeddings", base)
    if embeddings.suffix.lower() not in (".npz", ".parquet"):
        raise OwnModelError(
            f"{key}.item_embeddings: expected a .npz or .parquet file: {embeddings}"
        )
    return TwoTowerSpec(
        _file(data, key, "user_tower", base),
        embeddings,
        _string(data, key, "input", "user_id"),
        _string(data, key, "output", "user_embedding"),
    )


def parse(data, base: Path) -> OwnModels:
    """The spec of a parsed build file; paths relative to `base`."""
    if data is None:
        return OwnModels()
    data = _mapping(data, "the models file")
    _keys(
        data, "the models file", (), ("encoder", "search_ranker", "recommend_ranker", "two_tower")
    )
    return OwnModels(
        encoder=parse_encoder(data["encoder"], base) if "encoder" in data else None,
        search_ranker=parse_ranker(data["search_ranker"], base, "search_ranker")
        if "search_ranker" in data
        else None,
        recommend_ranker=parse_ranker(data["recommend_ranker"], base, "recommend_ranker")
        if "recommend_ranker" in data
        else None,
        two_tower=parse_two_tower(data["two_tower"], base) if "two_tower" in data else None,
    )


def load(path: str | Path) -> OwnModels:
    """The spec of the build file at `path`."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise OwnModelError(f"{path}: cannot read the models file: {err}") from None
    return parse(data, path.parent)


def with_flags(own: OwnModels, flags: Mapping[str, str | Path | None]) -> OwnModels:
    """`own` with the models the command-line flags give (they take precedence): `encoder`,
    `search_ranker` and `recommend_ranker` with their `*_features` (a comma-separated list:
    one float32 input named `features`), `user_tower` and `item_embeddings`."""
    here = Path(".")
    changes: dict = {}
    if flags.get("encoder"):
        changes["encoder"] = parse_encoder({"path": str(flags["encoder"])}, here, "--encoder-model")
    for name in ("search_ranker", "recommend_ranker"):
        flag = "--" + name.replace("_", "-")
        if not flags.get(name):
            if flags.get(f"{name}_features"):
                raise OwnModelError(f"{flag}-features needs {flag}")
            continue
        if not flags.get(f"{name}_features"):
            raise OwnModelError(f"{flag} needs {flag}-features (the features it reads, in order)")
        listed = [v.strip() for v in str(flags[f"{name}_features"]).split(",") if v.strip()]
        data = {
            "path": str(flags[name]),
            "inputs": [{"name": "features", "features": listed}],
        }
        changes[name] = parse_ranker(data, here, flag)
    towers = [flags.get("user_tower"), flags.get("item_embeddings")]
    if any(towers):
        if not all(towers):
            raise OwnModelError("--user-tower and --item-embeddings go together")
        data = {"user_tower": str(towers[0]), "item_embeddings": str(towers[1])}
        changes["two_tower"] = parse_two_tower(data, here, "--user-tower")
    return replace(own, **changes)


# -- the encoder ------------------------------------------------------------------------
@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"
    normalize: bool = False


def encoder_pooling(folder: Path) -> Pooling:
    """The pooling and normalisation of a sentence-transformers folder (mean, none for a
    plain transformers folder); refuses modules the export does not reproduce."""
    modules_file = folder / "modules.json"
    types = []
    if modules_file.is_file():
        types = [m.get("type", "").rsplit(".", 1)[-1] for m in json.loads(modules_file.read_text())]
    unsupported = sorted(set(types) - {"Transformer", "Pooling", "Normalize"})
    if unsupported:
        raise OwnModelError(
            f"encoder: {folder} has module(s) {', '.join(unsupported)}; only Transformer, "
            "Pooling and Normalize are exported"
        )
    normalize = "Normalize" in types or (folder / "2_Normalize").is_dir()
    pooling_file = folder / "1_Pooling" / "config.json"
    if not pooling_file.is_file():
        return Pooling("mean", normalize)
    config = json.loads(pooling_file.read_text())
    modes = [key for key, value in config.items() if key.startswith("pooling_mode") and value]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise OwnModelError(
            f"encoder: {pooling_file} sets {modes or 'no pooling mode'}; exactly one of "
            f"{', '.join(POOLING_MODES)} is supported"
        )
    return Pooling(POOLING_MODES[modes[0]], normalize)


def check_encoder_folder(folder: Path) -> int:
    """The encoder's embedding dimension (its hidden size); refuses a folder that lacks a
    file the build needs."""
    for needed in ("config.json", "tokenizer.json"):
        if not (folder / needed).is_file():
            raise OwnModelError(f"encoder: {folder} has no {needed}")
    if not any((folder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        raise OwnModelError(f"encoder: {folder} has no model.safetensors or pytorch_model.bin")
    config = json.loads((folder / "config.json").read_text())
    dim = config.get("hidden_size", config.get("dim"))
    if not isinstance(dim, int):
        raise OwnModelError(f"encoder: {folder / 'config.json'} names no hidden_size")
    encoder_pooling(folder)
    return dim


def check_dimension(encoder_dim: int, index_dim: int, index: str) -> None:
    if encoder_dim != index_dim:
        raise OwnModelError(
            f"encoder: its embeddings have dimension {encoder_dim} but {index} holds "
            f"{index_dim}-dimensional item embeddings; build {index} with it too"
        )


# -- rankers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    """A model tensor: its name, numpy dtype name and dims (int, or None where dynamic)."""

    name: str
    dtype: str
    dims: tuple[int | None, ...]


def check_ranker_io(
    key: str, spec: RankerSpec, inputs: list[TensorInfo], outputs: list[TensorInfo]
) -> bool:
    """Refuses a model whose tensors differ from the declaration; returns whether the
    output has a trailing dimension of 1 to drop."""
    declared = {i.name: i for i in spec.inputs}
    found = {t.name: t for t in inputs}
    extra = sorted(set(found) - set(declared))
    if extra:
        raise OwnModelError(f"{key}: the model reads input(s) {', '.join(extra)} not declared")
    absent = sorted(set(declared) - set(found))
    if absent:
        raise OwnModelError(
            f"{key}: declared input(s) {', '.join(absent)} are not the model's; it reads "
            f"{', '.join(found) or 'nothing'}"
        )
    for name, given in declared.items():
        tensor = found[name]
        if tensor.dtype != given.dtype:
            raise OwnModelError(
                f"{key}: input {name} is {tensor.dtype} in the model, declared {given.dtype}"
            )
        width = len(given.features)
        if len(tensor.dims) != 3:
            raise OwnModelError(
                f"{key}: input {name} has shape {_shape(tensor.dims)}; expected "
                f"[batch, candidates, {width}]"
            )
        if any(d is not None for d in tensor.dims[:2]):
            raise OwnModelError(
                f"{key}: input {name} has shape {_shape(tensor.dims)}; its batch and candidate "
                "axes must be dynamic"
            )
        if tensor.dims[2] is not None and tensor.dims[2] != width:
            raise OwnModelError(
                f"{key}: input {name} takes {tensor.dims[2]} features but declares {width} "
                f"({', '.join(given.features)})"
            )
    by_name = {t.name: t for t in outputs}
    if spec.output not in by_name:
        raise OwnModelError(
            f"{key}: the model has no output {spec.output}; it has {', '.join(by_name)}"
        )
    output = by_name[spec.output]
    if output.dtype != "float32":
        raise OwnModelError(f"{key}: output {spec.output} is {output.dtype}; expected float32")
    if len(output.dims) not in (2, 3) or (len(output.dims) == 3 and output.dims[2] not in (1,)):
        raise OwnModelError(
            f"{key}: output {spec.output} has shape {_shape(output.dims)}; expected "
            "[batch, candidates] or [batch, candidates, 1]"
        )
    return len(output.dims) == 3


def _shape(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def tensor_infos(values) -> list[TensorInfo]:
    """TensorInfo of ONNX ValueInfos."""
    import onnx

    infos = []
    for value in values:
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        infos.append(TensorInfo(value.name, dtype, dims))
    return infos


def load_onnx(path: Path, key: str):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except (OSError, DecodeError, onnx.checker.ValidationError) as err:
        raise OwnModelError(f"{key}: {path} does not load as ONNX: {err}") from None
    return model


def load_torchscript(path: Path, key: str):
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except (OSError, RuntimeError, ValueError) as err:
        raise OwnModelError(f"{key}: {path} does not load as TorchScript: {err}") from None


def select_features(spec: RankerSpec, sparse: np.ndarray, dense: np.ndarray) -> dict:
    """The declared inputs from the features stage's `sparse` and `dense` tensors."""
    feeds = {}
    for given in spec.inputs:
        columns = [
            sparse[..., SPARSE_FEATURES.index(f)]
            if f in SPARSE_FEATURES
            else dense[..., DENSE_FEATURES.index(f)]
            for f in given.features
        ]
        feeds[given.name] = np.stack(columns, axis=-1).astype(given.dtype)
    return feeds


def wrap_ranker(key: str, model, spec: RankerSpec, squeeze: bool):
    """The model reading `sparse` and `dense` (the features stage's outputs) and answering
    `score` [batch, candidates]: Gather and Cast nodes make each declared input."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    taken = {n for node in graph.node for n in (*node.input, *node.output)}
    clash = sorted(taken & {"sparse", "dense", "score"} - {spec.output})
    if clash:
        raise OwnModelError(f"{key}: the model already names tensor(s) {', '.join(clash)}")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        raise OwnModelError(f"{key}: opset {opset} is too old; export with opset 13 or newer")
    nodes = []
    for given in spec.inputs:
        columns = []
        to = TensorProto.FLOAT if given.dtype == "float32" else TensorProto.INT64
        for position, feature in enumerate(given.features):
            sparse = feature in SPARSE_FEATURES
            source = "sparse" if sparse else "dense"
            index = (SPARSE_FEATURES if sparse else DENSE_FEATURES).index(feature)
            stem = f"own_ranker/{given.name}/{position}"
            nodes.append(
                helper.make_node(
                    "Constant",
                    [],
                    [f"{stem}/index"],
                    value=helper.make_tensor(f"{stem}/index", TensorProto.INT64, [1], [index]),
                )
            )
            nodes.append(helper.make_node("Gather", [source, f"{stem}/index"], [stem], axis=2))
            nodes.append(helper.make_node("Cast", [stem], [f"{stem}/cast"], to=to))
            columns.append(f"{stem}/cast")
        nodes.append(helper.make_node("Concat", columns, [given.name], axis=2))
    tail = []
    if squeeze:
        axes = helper.make_tensor("own_ranker/axes", TensorProto.INT64, [1], [2])
        tail.append(helper.make_node("Constant", [], ["own_ranker/axes"], value=axes))
        tail.append(helper.make_node("Squeeze", [spec.output, "own_ranker/axes"], ["score"]))
    elif spec.output != "score":
        tail.append(helper.make_node("Identity", [spec.output], ["score"]))
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *body, *tail])
    del graph.input[:]
    graph.input.extend(
        [
            helper.make_tensor_value_info(
                "sparse", TensorProto.INT64, ["batch", "candidates", len(SPARSE_FEATURES)]
            ),
            helper.make_tensor_value_info(
                "dense", TensorProto.FLOAT, ["batch", "candidates", len(DENSE_FEATURES)]
            ),
        ]
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", "candidates"])
    )
    onnx.checker.check_model(model)
    return model


def sample_features(dataset, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real features (`ranker_inputs`) of random candidates for known and unknown users."""
    from builders import ranker
    from builders.runtime.features import ranker_inputs

    tables = ranker.build_tables(dataset)
    rng = np.random.default_rng(seed)
    n_items = len(tables.item_ids)
    shape = (SAMPLE_REQUESTS, SAMPLE_CANDIDATES)
    indexes = rng.integers(-1, n_items, size=shape).astype(np.int64)
    users = np.append(tables.user_ids[: SAMPLE_REQUESTS - 1], -1).astype(np.int64)
    scores = rng.uniform(-1, 1, size=shape).astype(np.float32)
    lexical = rng.uniform(0, 1, size=shape).astype(np.float32)
    return ranker_inputs(tables, users, indexes, scores, lexical)


def prepare_ranker(key: str, spec: RankerSpec, dataset, target: Path) -> dict:
    """The ranker as the repository's `sparse`/`dense` -> `score` ONNX model at `target`,
    checked against its declaration and scored against its source framework."""
    import onnx
    import onnxruntime as ort

    sparse, dense = sample_features(dataset)
    feeds = select_features(spec, sparse, dense)
    if spec.kind == "lightgbm":
        served, expected = lightgbm_ranker(key, spec, feeds)
    elif spec.kind == "onnx":
        model = load_onnx(spec.path, key)
        source = ort.InferenceSession(spec.path.read_bytes(), providers=["CPUExecutionProvider"])
        inputs, outputs = tensor_infos(model.graph.input), tensor_infos(model.graph.output)
        squeeze = check_ranker_io(key, spec, inputs, outputs)
        (expected,) = source.run([spec.output], feeds)
        served = wrap_ranker(key, model, spec, squeeze)
    else:
        module = load_torchscript(spec.path, key)
        model, expected = torchscript_to_onnx(key, module, spec, feeds, target)
        squeeze = check_ranker_io(
            key, spec, tensor_infos(model.graph.input), tensor_infos(model.graph.output)
        )
        served = wrap_ranker(key, model, spec, squeeze)
    onnx.save(served, str(target))
    served = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (scores,) = served.run(["score"], {"sparse": sparse, "dense": dense})
    expected = np.asarray(expected, dtype=np.float32).reshape(scores.shape)
    difference = float(np.abs(scores - expected).max())
    if not difference <= RANKER_ATOL:
        raise OwnModelError(
            f"{key}: the served model's scores differ from {spec.kind}'s by {difference:.3g} "
            f"(tolerance {RANKER_ATOL:g})"
        )
    return {
        "max_abs_diff": difference,
        "atol": RANKER_ATOL,
        "against": SOURCE_FRAMEWORKS[spec.kind],
        "samples": int(scores.size),
    }


def lightgbm_ranker(key: str, spec: RankerSpec, feeds: dict):
    """A LightGBM text model as the repository's ranker graph (`gbdt.onnx_model`) and
    LightGBM's scores of `feeds`. Its one declared input lists the booster's features, in the
    repository's order (SPARSE_FEATURES, then DENSE_FEATURES)."""
    from builders import gbdt

    if len(spec.inputs) != 1:
        raise OwnModelError(f"{key}: a LightGBM model reads one input; {len(spec.inputs)} declared")
    (given,) = spec.inputs
    ordered = tuple(f for f in (*SPARSE_FEATURES, *DENSE_FEATURES) if f in given.features)
    if given.features != ordered:
        raise OwnModelError(
            f"{key}: a LightGBM model's features must be declared in the repository's order: "
            f"{', '.join(ordered)}"
        )
    try:
        booster = gbdt.load_booster(spec.path)
        gbdt.check_features(booster, given.features, key)
        model = gbdt.onnx_model(booster, given.features)
    except gbdt.ModelFileError as err:
        raise OwnModelError(f"{key}: {err}") from None
    columns = feeds[given.name]
    expected = booster.predict(columns.reshape(-1, columns.shape[-1]))
    return model, expected.reshape(columns.shape[:-1])


def torchscript_to_onnx(key: str, module, spec: RankerSpec, feeds: dict, target: Path):
    """The TorchScript ranker exported to ONNX at `target` with dynamic batch and candidate
    axes, and its torch scores of `feeds`."""
    import onnx
    import torch

    args = tuple(torch.from_numpy(feeds[i.name]) for i in spec.inputs)
    try:
        with torch.no_grad():
            expected = module(*args)
            dynamic = {i.name: {0: "batch", 1: "candidates"} for i in spec.inputs}
            dynamic[spec.output] = {0: "batch", 1: "candidates"}
            torch.onnx.export(
                module,
                args,
                str(target),
                input_names=[i.name for i in spec.inputs],
                output_names=[spec.output],
                dynamic_axes=dynamic,
                opset_version=17,
                dynamo=False,
            )
    except (RuntimeError, TypeError, ValueError) as err:  # rejects the declared inputs
        raise OwnModelError(
            f"{key}: the TorchScript model fails on the declared inputs: {err}"
        ) from None
    if not isinstance(expected, torch.Tensor):
        raise OwnModelError(f"{key}: the TorchScript model must return one tensor of scores")
    return onnx.load(str(target)), expected.numpy()


# -- two-tower --------------------------------------------------------------------------
def read_item_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item ids int64 [n], embeddings float32 [n, dim]) of a .npz or .parquet file."""
    key = "two_tower.item_embeddings"
    npz = path.suffix.lower() == ".npz"
    id_name, vector_name = ("item_ids", "embeddings") if npz else ("item_id", "embedding")
    needed = {id_name, vector_name}
    try:
        if npz:
            with np.load(path) as data:
                arrays = {name: data[name] for name in needed & set(data.files)}
        else:
            import pandas as pd

            frame = pd.read_parquet(path)
            arrays = {name: frame[name].to_numpy() for name in needed & set(frame.columns)}
            if vector_name in arrays:
                arrays[vector_name] = np.stack(
                    [np.asarray(v, np.float32) for v in arrays[vector_name]]
                )
    except (OSError, ValueError, zipfile.BadZipFile) as err:  # pyarrow's are ValueErrors
        raise OwnModelError(f"{key}: {path} does not load: {err}") from None
    if set(arrays) != needed:
        kind = "arrays" if npz else "columns"
        raise OwnModelError(f"{key}: {path} needs {kind} {id_name} and {vector_name}")
    ids, vectors = arrays[id_name], arrays[vector_name]
    if vectors.ndim != 2 or ids.ndim != 1 or len(ids) != len(vectors):
        raise OwnModelError(f"{key}: expected {len(ids)} embeddings [n, dim], got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise OwnModelError(f"{key}: some embeddings are not finite")
    return ids.astype(np.int64), vectors.astype(np.float32)


def align_to_catalog(ids: np.ndarray, vectors: np.ndarray, catalog_ids: np.ndarray) -> np.ndarray:
    """The embeddings in the order of the sorted `catalog_ids`; refuses unknown, missing and
    repeated ids."""
    key = "two_tower.item_embeddings"
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise OwnModelError(f"{key}: item id(s) given twice: {_some(unique[counts > 1])}")
    unknown = np.setdiff1d(ids, catalog_ids)
    if len(unknown):
        raise OwnModelError(
            f"{key}: {len(unknown)} item id(s) not in the catalog: {_some(unknown)}"
        )
    missing = np.setdiff1d(catalog_ids, ids)
    if len(missing):
        raise OwnModelError(
            f"{key}: {len(missing)} catalog item(s) have no embedding: {_some(missing)}"
        )
    return vectors[np.argsort(ids)]


def _some(ids: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:5])
    return shown + (", ..." if len(ids) > 5 else "")


def prepare_user_tower(spec: TwoTowerSpec, user_ids: np.ndarray, target: Path) -> tuple[int, dict]:
    """The tower as the repository's `user_id` -> `user_embedding` ONNX model at `target`;
    its dimension and parity against the file as given."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    key = "two_tower.user_tower"
    model = load_onnx(spec.user_tower, key)
    inputs, outputs = tensor_infos(model.graph.input), tensor_infos(model.graph.output)
    if [i.name for i in inputs] != [spec.input]:
        raise OwnModelError(
            f"{key}: expected one input {spec.input}; the model reads "
            f"{', '.join(i.name for i in inputs)}"
        )
    if inputs[0].dtype != "int64" or len(inputs[0].dims) != 2 or inputs[0].dims[1] not in (1,):
        raise OwnModelError(
            f"{key}: input {spec.input} is {inputs[0].dtype} {_shape(inputs[0].dims)}; "
            "expected int64 [batch, 1]"
        )
    output = next((o for o in outputs if o.name == spec.output), None)
    if output is None:
        raise OwnModelError(f"{key}: the model has no output {spec.output}")
    if output.dtype != "float32" or len(output.dims) != 2 or output.dims[1] is None:
        raise OwnModelError(
            f"{key}: output {spec.output} is {output.dtype} {_shape(output.dims)}; expected "
            "float32 [batch, dim]"
        )
    graph = model.graph
    if spec.input != "user_id":
        graph.input[0].name = "user_id"
        graph.node.insert(0, helper.make_node("Identity", ["user_id"], [spec.input]))
    if spec.output != "user_embedding":
        graph.node.append(helper.make_node("Identity", [spec.output], ["user_embedding"]))
    kept = next(o for o in graph.output if o.name == spec.output)
    kept = helper.make_tensor_value_info(
        "user_embedding", kept.type.tensor_type.elem_type, ["batch", output.dims[1]]
    )
    del graph.output[:]
    graph.output.append(kept)
    onnx.save(model, str(target))
    users = np.append(user_ids[:63], int(user_ids.max(initial=0)) + 1).astype(np.int64)[:, None]
    source = ort.InferenceSession(
        spec.user_tower.read_bytes(), providers=["CPUExecutionProvider"]
    ).run([spec.output], {spec.input: users})[0]
    served = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(
        ["user_embedding"], {"user_id": users}
    )[0]
    difference = float(np.abs(served - source).max())
    if not difference <= TOWER_ATOL:
        raise OwnModelError(f"{key}: the served tower differs by {difference:.3g}")
    return int(output.dims[1]), {
        "max_abs_diff": difference,
        "atol": TOWER_ATOL,
        "users": len(users),
    }


# -- all together ------------------------------------------------------------------------
@dataclass
class Prepared:
    """What `prepare` made of a team's models (files in its folder, which the build copies)."""

    encoder: Path | None = None  # the source folder (`text_encoder.source`)
    encoder_onnx: Path | None = None
    encoder_parity: dict = field(default_factory=dict)
    rankers: dict[str, tuple[Path, dict]] = field(default_factory=dict)
    user_tower: tuple[Path, dict] | None = None
    item_embeddings: np.ndarray | None = None  # in sorted catalog order
    sources: dict[str, dict] = field(default_factory=dict)  # model -> its manifest record


def prepare(
    own: OwnModels,
    dataset,
    folder: Path,
    index_dims: Mapping[str, int],
    user_ids: np.ndarray | None = None,
) -> Prepared:
    """Check and convert every given model into `folder`. `index_dims`: the dimension of
    each index this build does not rebuild but a given model must match. `user_ids`: the
    ids a user tower answers (default: `dataset`'s; a build gives the served ids, its
    dataset holds user indexes)."""
    from pickle import UnpicklingError

    from safetensors import SafetensorError

    from builders import text_encoder
    from builders.data import user_vocabulary

    prepared, folder = Prepared(), Path(folder)
    if own.encoder is not None:
        source = own.encoder.path
        dim = check_encoder_folder(source)
        if names.SEARCH_INDEX in index_dims:
            check_dimension(dim, index_dims[names.SEARCH_INDEX], names.SEARCH_INDEX)
        pooling = encoder_pooling(source)
        target = folder / "encoder.onnx"
        with text_encoder.source(source):
            try:
                reference = text_encoder.load_reference()
            except (OSError, ValueError, RuntimeError, SafetensorError, UnpicklingError) as err:
                raise OwnModelError(f"encoder: {source} does not load: {err}") from None
            prepared.encoder_parity = text_encoder.export_onnx(target, reference)
        prepared.encoder, prepared.encoder_onnx = source, target
        prepared.sources[names.TEXT_ENCODER] = {
            "path": str(source),
            "pooling": pooling.mode,
            "normalize": pooling.normalize,
            "dim": dim,
        }
    for name, spec in own.rankers.items():
        if not dataset.has_interactions:
            raise OwnModelError(f"{name}: the ranking features need an interaction log")
        target = folder / f"{name}.onnx"
        prepared.rankers[name] = (target, prepare_ranker(name, spec, dataset, target))
        prepared.sources[name] = {
            "path": str(spec.path),
            "format": spec.kind,
            "inputs": [
                {"name": i.name, "dtype": i.dtype, "features": list(i.features)}
                for i in spec.inputs
            ],
            "output": spec.output,
        }
    if own.two_tower is not None:
        if not dataset.has_interactions:
            raise OwnModelError("two_tower: the recommend pipeline needs an interaction log")
        spec = own.two_tower
        target = folder / "user_tower.onnx"
        known = user_vocabulary(dataset) if user_ids is None else user_ids
        dim, parity = prepare_user_tower(spec, known, target)
        ids, vectors = read_item_embeddings(spec.item_embeddings)
        if vectors.shape[1] != dim:
            raise OwnModelError(
                f"two_tower: the user tower answers dimension {dim} but the item embeddings "
                f"have dimension {vectors.shape[1]}"
            )
        catalog_ids = np.sort(dataset.catalog.item_id.to_numpy(dtype=np.int64))
        prepared.item_embeddings = align_to_catalog(ids, vectors, catalog_ids)
        prepared.user_tower = (target, parity)
        prepared.sources[names.USER_TOWER] = {
            "path": str(spec.user_tower),
            "item_embeddings": str(spec.item_embeddings),
            "dim": dim,
        }
    return prepared
