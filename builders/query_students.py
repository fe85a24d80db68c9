"""Cheap query encoders distilled into the teacher's embedding space (asymmetric retrieval).

Items are embedded offline, once, by the teacher (`builders.text_encoder`); queries are
embedded on every request. A student learns to map a query to where the teacher would put
it, so the search index keeps the teacher's item embeddings and only the query side gets
cheaper. Three students, each reading the tokenizer stage's `input_ids` and `attention_mask`
and answering a unit-length `embedding` [batch, 384], so each drops in for the teacher:

* **static** (`StaticEncoder`): one vector per WordPiece token and their mean over the
  attention mask: a Gather and a ReduceMean in ONNX. Each token's vector starts as the
  teacher's embedding of that token alone, so words the training texts never show still
  land near their meaning.
* **one layer** and **shallow** (`shallow_encoder`): the teacher's embeddings and its first
  transformer layer, or its first `SHALLOW_LAYERS`, with the teacher's mean pooling and
  normalisation. The one-layer student costs about a sixth of the teacher and the shallow
  one a third; the gate serves the fastest that keeps the teacher's quality.

All regress the teacher's normalised embeddings (cosine loss) of `distillation_texts`:
logged queries (never the held-out ones the gate judges on), catalog titles, title fragments,
attribute phrases and typos of them. Training is seeded and its figures (data sizes, epochs,
loss per epoch, seconds) go to the student's manifest.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from builders import names, text_encoder
from builders.data import Dataset
from builders.progress import say
from builders.runtime.tokenization import DEFAULT_MAX_LENGTH, QueryTokenizer, longest_padding

#: Caps on each kind of distillation text (all logged queries are used; title fragments
#: are also capped at two per item).
MAX_TITLES = 4000
MAX_FRAGMENTS = 6000
MAX_ATTRIBUTE_PHRASES = 2000
MAX_TYPOS = 2000
#: Transformer layers the shallow student keeps (the teacher's first ones).
SHALLOW_LAYERS = 2


@dataclass(frozen=True)
class Recipe:
    """How a student is fitted."""

    epochs: int
    batch_size: int
    learning_rate: float
    #: Tokens of each text the student reads in training (queries are far shorter).
    max_length: int = DEFAULT_MAX_LENGTH


STATIC_RECIPE = Recipe(epochs=6, batch_size=128, learning_rate=0.02)
SHALLOW_RECIPE = Recipe(epochs=2, batch_size=64, learning_rate=5e-4, max_length=16)
#: One layer has further to go: a third epoch took the synthetic gate's NDCG@10 from 0.9196
#: to 0.9242 (the teacher's 0.9309; the two-layer student's 0.9246 after two).
ONE_LAYER_RECIPE = Recipe(epochs=3, batch_size=64, learning_rate=5e-4, max_length=16)


def distillation_texts(
    dataset: Dataset, held_out: Sequence[str], item_texts: Sequence[str], seed: int = 0
) -> dict[str, list[str]]:
    """The texts students learn the teacher's embeddings on, by kind. `held_out` queries
    (those the gate judges on) are left out wherever they would appear."""
    rng = np.random.default_rng(seed)
    excluded = {query.lower() for query in held_out}
    logged = []
    if dataset.interactions is not None:
        logged = sorted(set(dataset.interactions["query"].dropna()) - set(held_out))
    titles = _sample(rng, [text for text in item_texts if text.lower() not in excluded], MAX_TITLES)
    words = [title.split() for title in dataset.catalog.title.astype(str)]
    fragments = []
    for _ in range(min(MAX_FRAGMENTS, 2 * len(words))):
        title = words[rng.integers(len(words))]
        length = int(rng.integers(1, min(4, len(title)) + 1))
        start = int(rng.integers(len(title) - length + 1))
        fragments.append(" ".join(title[start : start + length]).strip(",.;:").lower())
    phrases = sorted(set(attribute_phrases(dataset)))
    phrases = _sample(rng, phrases, MAX_ATTRIBUTE_PHRASES)
    sources = logged + fragments
    typos = (
        [typo(sources[i], rng) for i in rng.integers(len(sources), size=MAX_TYPOS)]
        if sources
        else []
    )
    kinds = {
        "logged_queries": logged,
        "titles": titles,
        "title_fragments": fragments,
        "attribute_phrases": phrases,
        "typos": typos,
    }
    return {
        kind: [text for text in texts if text.strip() and text.lower() not in excluded]
        for kind, texts in kinds.items()
    }


def attribute_phrases(dataset: Dataset) -> list[str]:
    """Category names and "<attribute> <category>" phrases from the catalog's columns."""
    catalog = dataset.catalog
    category = catalog.category.astype(str).str.lower()
    phrases = list(category)
    for column in ("brand", "color", "material", "feature"):
        if column in catalog:
            values = catalog[column].astype("string").str.lower()
            phrases += [f"{v} {c}" for v, c in zip(values, category) if isinstance(v, str) and v]
    return phrases


def typo(text: str, rng: np.random.Generator) -> str:
    """`text` with one letter of one word of three or more letters dropped, doubled, swapped
    with the one before it or replaced (as users mistype)."""
    words = text.split()
    long = [i for i, word in enumerate(words) if len(word) >= 3]
    if not long:
        return text
    i = long[int(rng.integers(len(long)))]
    word = words[i]
    at = int(rng.integers(1, len(word) - 1))
    edit = int(rng.integers(4))
    if edit == 0:
        word = word[:at] + word[at + 1 :]
    elif edit == 1:
        word = word[:at] + word[at] + word[at:]
    elif edit == 2:
        word = word[: at - 1] + word[at] + word[at - 1] + word[at + 1 :]
    else:
        word = word[:at] + "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))] + word[at + 1 :]
    words[i] = word
    return " ".join(words)


def _sample(rng: np.random.Generator, texts: Sequence[str], n: int) -> list[str]:
    if len(texts) <= n:
        return list(texts)
    return [texts[i] for i in sorted(rng.choice(len(texts), n, replace=False))]


class StaticEncoder(torch.nn.Module):
    """Token vectors, their mean over the attention mask, L2 normalisation."""

    def __init__(self, vectors: np.ndarray) -> None:
        super().__init__()
        self.vectors = torch.nn.Embedding.from_pretrained(
            torch.from_numpy(np.asarray(vectors, dtype=np.float32)), freeze=False, sparse=True
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return text_encoder.mean_pooled(self.vectors(input_ids), attention_mask)


def token_vectors(teacher, vocab_size: int, cls_id: int, sep_id: int) -> np.ndarray:
    """The teacher's embedding of each token alone (`[CLS] token [SEP]`), [vocab_size, dim]:
    `teacher` maps (input_ids, attention_mask) int64 arrays to embeddings."""
    tokens = np.arange(vocab_size, dtype=np.int64)
    ids = np.stack([np.full(vocab_size, cls_id), tokens, np.full(vocab_size, sep_id)], axis=1)
    mask = np.ones_like(ids)
    return np.concatenate(
        [
            teacher(ids[start : start + 1024], mask[start : start + 1024])
            for start in range(0, vocab_size, 1024)
        ]
    )


def shallow_encoder(teacher: torch.nn.Module, layers: int = SHALLOW_LAYERS) -> torch.nn.Module:
    """A copy of the teacher (`text_encoder.SentenceEncoder`) keeping its first `layers`."""
    student = copy.deepcopy(teacher)
    bert = student.bert
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers
    return student


def fit(
    student: torch.nn.Module,
    texts: Sequence[str],
    targets: np.ndarray,
    tokenizer_json,
    recipe: Recipe,
    seed: int,
    name: str,
    progress: bool = True,
) -> dict:
    """Train `student` to give `targets` (the teacher's unit embeddings of `texts`) by cosine
    loss; returns the training record. Sparse parameters (the static student's token
    vectors) take SparseAdam, the others Adam."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    width = recipe.max_length
    tokenizer = QueryTokenizer(tokenizer_json, width, longest_padding(width))
    sparse = [p for m in student.modules() if getattr(m, "sparse", False) for p in m.parameters()]
    dense = [p for p in student.parameters() if all(p is not s for s in sparse)]
    optimizers = []
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=recipe.learning_rate))
    if dense:
        optimizers.append(torch.optim.Adam(dense, lr=recipe.learning_rate))
    goal = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    losses = []
    started = time.perf_counter()
    student.train()
    for epoch in range(recipe.epochs):
        order = rng.permutation(len(texts))
        total = 0.0
        for start in range(0, len(order), recipe.batch_size):
            rows = order[start : start + recipe.batch_size]
            ids, mask = tokenizer.encode([texts[i] for i in rows], searchable=False)
            embedded = student(torch.from_numpy(ids), torch.from_numpy(mask))
            loss = (1 - (embedded * goal[rows]).sum(dim=1)).mean()
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            total += loss.item() * len(rows)
        losses.append(round(total / len(texts), 5))
        say(
            progress,
            f"[students] {name}: epoch {epoch + 1}/{recipe.epochs}, cosine loss "
            f"{losses[-1]:.4f} ({time.perf_counter() - started:.0f} s)",
        )
    student.eval()
    return {
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "learning_rate": recipe.learning_rate,
        "max_length": recipe.max_length,
        "seed": seed,
        "loss_per_epoch": losses,
        "seconds": round(time.perf_counter() - started, 1),
    }


def train_students(
    teacher: torch.nn.Module,
    teacher_onnx,
    tokenizer_json,
    dataset: Dataset,
    held_out: Sequence[str],
    item_texts: Sequence[str],
    seed: int = 0,
    max_length: int = DEFAULT_MAX_LENGTH,
    progress: bool = True,
) -> dict[str, tuple[torch.nn.Module, dict]]:
    """The students, fitted to the teacher (`teacher`, and its export `teacher_onnx`) on
    `distillation_texts`: name -> (module in eval mode, its training record)."""

    by_kind = distillation_texts(dataset, held_out, item_texts, seed)
    texts = [text for kind in by_kind.values() for text in kind]
    if not texts:
        raise ValueError(f"{dataset.name}: no texts to distil the query encoder on")
    sizes = {kind: len(kind_texts) for kind, kind_texts in by_kind.items()}
    say(
        progress,
        f"[students] embedding {len(texts):,} distillation texts with the teacher ({sizes})",
    )
    targets = text_encoder.embed(teacher_onnx, texts, max_length=max_length, progress=False)
    session = text_encoder.session(teacher_onnx)
    vocab = Tokenizer.from_file(str(tokenizer_json)).get_vocab()
    say(
        progress,
        f"[students] embedding each of the {len(vocab):,} vocabulary tokens alone with the teacher",
    )
    vectors = token_vectors(
        lambda ids, mask: text_encoder.encode(session, ids, mask),
        len(vocab),
        vocab["[CLS]"],
        vocab["[SEP]"],
    )
    data = {"texts": sizes, "total": len(texts)}
    students = {}
    for name, student, recipe in (
        (names.QUERY_ENCODER_STATIC, StaticEncoder(vectors), STATIC_RECIPE),
        (names.QUERY_ENCODER_ONE_LAYER, shallow_encoder(teacher, 1), ONE_LAYER_RECIPE),
        (names.QUERY_ENCODER_SHALLOW, shallow_encoder(teacher), SHALLOW_RECIPE),
    ):
        record = fit(student, texts, targets, tokenizer_json, recipe, seed, name, progress)
        students[name] = (student, {"data": data, **record})
    return students
