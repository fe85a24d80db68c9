"""Query tokenisation: the pure module, and the Python-backend model through the real server."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import builders.runtime
from builders.runtime.tokenization import (
    DEFAULT_MAX_LENGTH,
    MAX_QUERY_CHARS,
    EmptyQueryError,
    QueryTokenizer,
    decode_query,
)
from builders.text_encoder import tokenizer_json
from tests.fake_pb_utils import load_model, outputs
from tests.tiny_models import write_config

CLS, SEP, PAD = 101, 102, 0
HUGE_QUERY = b"trail running shoes " * 5_000  # 100 KB


@pytest.fixture(scope="module")
def tokenizer() -> QueryTokenizer:
    return QueryTokenizer(tokenizer_json())


def test_pads_to_max_length(tokenizer):
    input_ids, attention_mask = tokenizer.encode(["red running shoes"])
    assert input_ids.shape == attention_mask.shape == (1, DEFAULT_MAX_LENGTH)
    assert input_ids.dtype == attention_mask.dtype == np.int64
    assert input_ids[0, 0] == CLS and input_ids[0, 4] == SEP
    assert (input_ids[0, 5:] == PAD).all()
    assert attention_mask[0].tolist() == [1] * 5 + [0] * (DEFAULT_MAX_LENGTH - 5)


def test_truncates_to_max_length():
    short = QueryTokenizer(tokenizer_json(), max_length=6)
    input_ids, attention_mask = short.encode(["waterproof hiking boots for men size ten"])
    assert input_ids.shape == (1, 6)
    assert attention_mask.all()
    assert input_ids[0, 0] == CLS and input_ids[0, -1] == SEP


def test_mixed_lengths_share_one_shape(tokenizer):
    texts = ["tv", "a " * 100, "stainless steel saucepan", b"mug"]
    input_ids, attention_mask = tokenizer.encode(texts)
    assert input_ids.shape == attention_mask.shape == (4, DEFAULT_MAX_LENGTH)
    assert attention_mask.sum(axis=1).tolist() == [3, DEFAULT_MAX_LENGTH, 6, 3]


def test_buckets_pad_a_batch_to_the_smallest_width_that_holds_it():
    bucketed = QueryTokenizer(tokenizer_json(), 32, buckets=(8, 16))
    assert bucketed.buckets == (8, 16, 32)
    plain_ids, _ = QueryTokenizer(tokenizer_json(), 32).encode(["tv", "stainless steel saucepan"])
    for texts, width in (
        (["tv"], 8),
        (["tv", "stainless steel saucepan"], 8),
        (["waterproof hiking boots for men size ten and a half wide"], 16),
        (["a " * 100], 32),
    ):
        input_ids, attention_mask = bucketed.encode(texts)
        assert input_ids.shape == attention_mask.shape == (len(texts), width)
    input_ids, attention_mask = bucketed.encode(["tv", "stainless steel saucepan"])
    np.testing.assert_array_equal(input_ids, plain_ids[:, :8])  # the same tokens, cut


@pytest.mark.parametrize(
    ("buckets", "message"), [((2,), "in 3..32"), ((8, 64), "in 3..32"), ((0,), "in 3..32")]
)
def test_bad_buckets_are_refused(buckets, message):
    with pytest.raises(ValueError, match=message):
        QueryTokenizer(tokenizer_json(), 32, buckets=buckets)


def test_buckets_come_from_the_model_config():
    parameters = {
        "max_length": {"string_value": "16"},
        "length_buckets": {"string_value": "8,16"},
    }
    tokenizer = QueryTokenizer.from_parameters(tokenizer_json(), parameters)
    assert (tokenizer.max_length, tokenizer.buckets) == (16, (8, 16))
    assert QueryTokenizer.from_parameters(tokenizer_json(), {}).buckets == (DEFAULT_MAX_LENGTH,)
    with pytest.raises(ValueError, match="integers like"):
        QueryTokenizer.from_parameters(tokenizer_json(), {"length_buckets": {"string_value": "x"}})


def test_titles_need_a_token_not_a_letter():
    tokenizer = QueryTokenizer(tokenizer_json())
    input_ids, _ = tokenizer.encode(["\U0001f45f", "!!!"], searchable=False)
    assert input_ids.shape[0] == 2
    with pytest.raises(EmptyQueryError):
        tokenizer.encode([" "], searchable=False)


def test_empty_batch(tokenizer):
    input_ids, attention_mask = tokenizer.encode([])
    assert input_ids.shape == attention_mask.shape == (0, DEFAULT_MAX_LENGTH)


def test_normalises_like_the_model(tokenizer):
    """Lower-casing and accent stripping come from the tokenizer.json."""
    upper, plain = tokenizer.encode(["CAFÉ Mug", "cafe mug"])[0]
    np.testing.assert_array_equal(upper, plain)


def test_bytes_and_text_tokenise_alike(tokenizer):
    as_bytes, as_text = tokenizer.encode(["crème brûlée set".encode(), "crème brûlée set"])[0]
    np.testing.assert_array_equal(as_bytes, as_text)


@pytest.mark.parametrize("raw", [b"red \xff\xfe shoes", b"caf\xc3"])
def test_invalid_utf8_is_replaced_not_raised(tokenizer, raw):
    input_ids, attention_mask = tokenizer.encode([raw])
    assert input_ids.shape == (1, DEFAULT_MAX_LENGTH) and attention_mask[0, :3].all()
    expected = tokenizer.encode([raw.decode("utf-8", errors="replace")])[0]
    np.testing.assert_array_equal(input_ids, expected)


@pytest.mark.parametrize(
    "query",
    [
        *("", "   ", "\t\n", b"", b" \x00 ", "\u200b", b"\x80\xff", "\x00\x01\x02"),
        *("\U0001f600\U0001f600", "!!!", "$ % & ?", "\U0001f45f ..."),
    ],
)
def test_a_query_without_letters_or_digits_is_a_clear_error(tokenizer, query):
    """Nothing left after normalisation (which drops control characters and invalid bytes'
    replacement characters), or only punctuation, symbols and out-of-vocabulary emoji."""
    with pytest.raises(ValueError, match="empty query"):
        tokenizer.encode([query])


@pytest.mark.parametrize("query", ["caf\u00e9 \U0001f45f", "$$$ 42", "red shoes!", "x"])
def test_a_letter_or_digit_among_symbols_is_searchable(tokenizer, query):
    input_ids, _ = tokenizer.encode([query])
    assert input_ids.shape == (1, DEFAULT_MAX_LENGTH)


def test_empty_query_error_names_its_index(tokenizer):
    with pytest.raises(EmptyQueryError) as caught:
        tokenizer.encode(["blender", "toaster", " "])
    assert caught.value.index == 2


def test_huge_query_is_cut_before_tokenising(tokenizer):
    assert len(decode_query(HUGE_QUERY)) == MAX_QUERY_CHARS
    assert decode_query(HUGE_QUERY) == HUGE_QUERY[:MAX_QUERY_CHARS].decode()
    input_ids, attention_mask = tokenizer.encode([HUGE_QUERY])
    assert input_ids.shape == (1, DEFAULT_MAX_LENGTH) and attention_mask.all()
    np.testing.assert_array_equal(input_ids, tokenizer.encode(["trail running shoes " * 20])[0])


def test_huge_multibyte_query_keeps_whole_characters():
    query = "€".encode() * 40_000  # 120 KB, 3 bytes a character
    assert decode_query(query) == "€" * MAX_QUERY_CHARS


#: Requests of a dynamic batch: short and long queries (each its own bucket), an empty
#: request, invalid UTF-8, a huge query, and one request refused for its second query.
BATCH = [
    [b"red running shoes"],
    [b"waterproof hiking boots for men size ten and a half wide", b"tv"],
    [],
    [b"red \xff\xfe shoes", HUGE_QUERY],
    [b"blender", b"!!!", b"   "],
    ["Crème Brûlée Ramekins".encode(), b"a " * 100],
]


def test_one_call_for_many_requests_pads_each_to_its_own_width():
    bucketed = QueryTokenizer(tokenizer_json(), 32, buckets=(8, 16))
    answers = bucketed.encode_each(BATCH)
    assert isinstance(answers[4], EmptyQueryError) and answers[4].index == 1
    widths = [answer[0].shape[1] for i, answer in enumerate(answers) if i != 4]
    assert widths == [8, 16, 8, 32, 32]
    for texts, answer in zip(BATCH, answers):
        if isinstance(answer, EmptyQueryError):
            with pytest.raises(EmptyQueryError, match="query 1 "):
                bucketed.encode(texts)
            continue
        for alone, batched in zip(bucketed.encode(texts), answer):
            np.testing.assert_array_equal(alone, batched)
            assert alone.shape == batched.shape and batched.dtype == np.int64
            assert batched.flags.c_contiguous


@pytest.mark.parametrize("preset", [None, "true"])
def test_the_served_stage_tokenises_on_its_own_thread_unless_told_otherwise(
    preset, tmp_path, monkeypatch
):
    if preset is None:
        monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    else:
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", preset)
    monkeypatch.setattr(os, "environ", os.environ.copy())  # the import writes to it
    load_model(tmp_path, "tokenizer_model", "tokenization", monkeypatch=monkeypatch)
    assert os.environ["TOKENIZERS_PARALLELISM"] == (preset or "false")


def test_served_model_batch_equals_each_request_alone(tmp_path, monkeypatch):
    model = load_model(tmp_path, "tokenizer_model", "tokenization", monkeypatch=monkeypatch)
    shutil.copy(tokenizer_json(), tmp_path / "tokenizer.json")
    stage = model.TritonPythonModel()
    parameters = {"max_length": {"string_value": "32"}, "length_buckets": {"string_value": "8,16"}}
    stage.initialize({"model_config": json.dumps({"parameters": parameters})})
    requests = [{"query": np.array(texts, dtype=object).reshape(-1, 1)} for texts in BATCH]
    batched = [outputs(r) for r in stage.execute(requests)]
    assert batched[4] == ("INVALID_ARG", str(EmptyQueryError(1)))
    for request, answer in zip(requests, batched):
        alone = outputs(stage.execute([request])[0])
        if isinstance(answer, tuple):
            assert answer == alone
            continue
        for name in ("input_ids", "attention_mask"):
            np.testing.assert_array_equal(answer[name], alone[name])
            assert answer[name].shape == alone[name].shape


def test_max_length_below_three_is_refused():
    with pytest.raises(ValueError, match="max_length"):
        QueryTokenizer(tokenizer_json(), max_length=2)


# The Python-backend model, served by the real tritonserver.

SERVED_MAX_LENGTH = 16
SERVED_QUERIES = [
    b"red running shoes",
    "Crème Brûlée Ramekins".encode(),
    b"red \xff\xfe shoes",
    HUGE_QUERY,
]


def write_tokenizer_model(repository: Path, name: str) -> None:
    version = repository / name / "1"
    version.mkdir(parents=True)
    runtime = Path(builders.runtime.__file__).parent
    shutil.copy(runtime / "tokenizer_model.py", version / "model.py")
    shutil.copy(runtime / "tokenization.py", version / "tokenization.py")
    shutil.copy(runtime / "stage_glue.py", version / "stage_glue.py")
    shutil.copy(tokenizer_json(), version / "tokenizer.json")
    write_config(
        repository / name,
        {
            "name": name,
            "backend": "python",
            "max_batch_size": 64,
            "input": [{"name": "query", "data_type": "TYPE_STRING", "dims": [1]}],
            "output": [
                {"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1]},
                {"name": "attention_mask", "data_type": "TYPE_INT64", "dims": [-1]},
            ],
            "dynamic_batching": {"max_queue_delay_microseconds": 50_000},
            "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
            "parameters": {
                "max_length": {"string_value": str(SERVED_MAX_LENGTH)},
                "length_buckets": {"string_value": "8,16"},
            },
        },
    )


@pytest.fixture(scope="module")
def served(triton_server):
    write_tokenizer_model(triton_server.model_repository, "query_tokenizer")
    triton_server.load_model("query_tokenizer")
    yield triton_server
    triton_server.unload_model("query_tokenizer")


def tokenize_served(server, queries: list[bytes], protocol: str = "grpc"):
    module = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(
        server.grpc_url if protocol == "grpc" else server.http_url
    )
    try:
        query = module.InferInput("query", [len(queries), 1], "BYTES")
        query.set_data_from_numpy(np.array(queries, dtype=object).reshape(-1, 1))
        result = client.infer("query_tokenizer", [query])
        return result.as_numpy("input_ids"), result.as_numpy("attention_mask")
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_tokens_equal_offline(served, protocol):
    input_ids, attention_mask = tokenize_served(served, SERVED_QUERIES, protocol)
    offline = QueryTokenizer(tokenizer_json(), SERVED_MAX_LENGTH, buckets=(8, 16))
    expected_ids, expected_mask = offline.encode(SERVED_QUERIES)
    assert input_ids.shape == (len(SERVED_QUERIES), offline.width(int(expected_mask.sum(1).max())))
    assert input_ids.dtype == np.int64
    np.testing.assert_array_equal(input_ids, expected_ids)
    np.testing.assert_array_equal(attention_mask, expected_mask)


@pytest.mark.slow
def test_served_empty_query_fails_alone(served):
    """Batched together, only the request with the empty query gets an error."""
    requests = [[b"blender"], [b"   "], [b"toaster", b"kettle"], [b"\xffmug"]]

    def one(queries):
        try:
            return tokenize_served(served, queries)
        except InferenceServerException as err:
            return err

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        results = list(pool.map(one, requests))
    assert isinstance(results[1], InferenceServerException)
    assert "empty query" in results[1].message()
    assert "INVALID_ARG" in str(results[1].status())
    for index in (0, 2, 3):
        input_ids, _ = results[index]
        assert input_ids.shape == (len(requests[index]), 8)  # short queries: the 8 bucket
    assert served.is_model_ready("query_tokenizer")
