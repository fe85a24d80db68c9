"""A team's own models, made tiny in the tests: a BERT folder with its WordPiece vocabulary
(sentence-transformers layout), rankers in ONNX, TorchScript and LightGBM, a user tower and
item embeddings."""

from __future__ import annotations

import json
import os
import re
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HIDDEN = 32


def wordpiece_vocab(texts: Iterable[str], words: int = 300) -> list[str]:
    """Special tokens, single characters (alone and as `##` pieces, so any word has a
    tokenisation) and the most frequent lower-cased words of `texts`."""
    characters = list(string.ascii_lowercase + string.digits)
    counts = Counter(w for text in texts for w in re.findall(r"[a-z0-9]+", text.lower()))
    common = [w for w, _ in counts.most_common() if len(w) > 1][:words]
    return [*SPECIALS, *characters, *("##" + c for c in characters), *common]


def write_bert_folder(
    folder: Path,
    texts: Iterable[str],
    pooling: str = "mean",
    normalize: bool = True,
    hidden: int = HIDDEN,
    seed: int = 0,
) -> Path:
    """A one-layer BERT with random weights, its fast tokenizer, and sentence-transformers'
    modules.json and 1_Pooling/config.json (plus 2_Normalize with `normalize`)."""
    os.environ.setdefault("USE_TF", "0")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(wordpiece_vocab(texts))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    BertTokenizerFast(tokenizer_object=tokenizer).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    modes = {
        "cls": "pooling_mode_cls_token",
        "mean": "pooling_mode_mean_tokens",
        "max": "pooling_mode_max_tokens",
    }
    pooling_config = {"word_embedding_dimension": hidden}
    pooling_config.update({key: mode == pooling for mode, key in modes.items()})
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    return folder


class LinearRanker(torch.nn.Module):
    """score = features @ w + b over [batch, candidates, n] features."""

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(n, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).squeeze(-1)


def write_onnx_ranker(
    path: Path,
    n_features: int,
    input_name: str = "features",
    output_name: str = "score",
    dynamic: bool = True,
    seed: int = 0,
) -> LinearRanker:
    """A linear ranker exported from torch to ONNX; returns the torch module."""
    module = LinearRanker(n_features, seed).eval()
    sample = torch.zeros(2, 3, n_features)
    axes = {0: "batch", 1: "candidates"}
    torch.onnx.export(
        module,
        (sample,),
        str(path),
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: axes, output_name: axes} if dynamic else None,
        opset_version=17,
        dynamo=False,
    )
    return module


def write_lightgbm_ranker(path: Path, features: list[str], seed: int = 0):
    """A LambdaMART ranker over `features`, trained on random groups of 20 candidates whose
    relevance grows with the first feature; saved as a LightGBM text model and returned."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    rows = rng.random((2000, len(features)))
    labels = np.digitize(rows[:, 0] + 0.3 * rng.random(2000), [0.6, 0.9, 1.1])
    data = lgb.Dataset(rows, labels, group=[20] * 100, feature_name=list(features))
    settings = {"objective": "lambdarank", "num_leaves": 7, "seed": seed, "verbose": -1}
    booster = lgb.train(settings, data, num_boost_round=20)
    booster.save_model(str(path))
    return booster


def write_torchscript_ranker(path: Path, n_features: int, seed: int = 0) -> LinearRanker:
    module = LinearRanker(n_features, seed).eval()
    torch.jit.script(module).save(str(path))
    return module


def write_user_tower(path: Path, dim: int, seed: int = 0) -> np.ndarray:
    """user_id int64 [batch, 1] -> float32 [batch, dim]: (id mod 97) times a weight row plus
    a bias; returns the weights [2, dim] (row 0 the weight, row 1 the bias)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(2, dim)).astype(np.float32)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Mod", ["user_id", "modulus"], ["small"]),
            helper.make_node("Cast", ["small"], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["as_float", "weight"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["user_embedding"]),
        ],
        name="user_tower",
        inputs=[helper.make_tensor_value_info("user_id", TensorProto.INT64, ["batch", 1])],
        outputs=[
            helper.make_tensor_value_info("user_embedding", TensorProto.FLOAT, ["batch", dim])
        ],
        initializer=[
            numpy_helper.from_array(np.array([97], np.int64), "modulus"),
            numpy_helper.from_array(weights[:1], "weight"),
            numpy_helper.from_array(weights[1], "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return weights
