"""Synonyms in the Solr / Elasticsearch synonyms format, and their expansion of a query's words.

Copied into the `hybrid_retrieval` model's version folder next to `lexical.py`, which reads the
version's `synonyms.txt` at load and applies it to every query (never to the item texts). One
rule a line:

    # a comment: a line whose first non-blank character is `#`; blank lines are skipped
    sofa, couch, settee            equivalent terms: a query with any of them gets them all
    telly, tv => television        explicit mapping: `telly` or `tv` becomes `television`
    loo roll => toilet paper       terms may be several words
    tv => tv, television           a mapping keeps its input only when it names it again

`\\` makes the next character literal (`\\,`, `\\=>`, `\\#`, `\\\\`). Rules merge: a term on
several lines becomes everything those lines give it. Terms are compared after the index's
own analysis (`Synonyms(text, source, analyse)`: lower case, stop words out, stemmed), so
`Kitty Litters` in a query matches the rule for `kitty litter`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: The synonyms file's name in a version folder.
FILE = "synonyms.txt"
_ARROW = "=>"


class SynonymsError(ValueError):
    """A synonyms file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Rule:
    """One line: each of `inputs` found in a query becomes all of `outputs` (for an
    equivalence, `outputs` are the `inputs`)."""

    line: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def parse(text: str, source: str = "<synonyms>") -> tuple[Rule, ...]:
    """The rules of a synonyms file's `text`, in line order; `source` names it in errors."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            sides = [[term.strip() for term in side] for side in _split(line)]
        except SynonymsError as err:
            raise SynonymsError(f"{source}:{number}: {err}") from None
        where = f"{source}:{number}: {line.strip()!r}"
        if len(sides) > 2:
            raise SynonymsError(f"{where} has more than one '{_ARROW}'")
        if any(not term for side in sides for term in side):
            raise SynonymsError(
                f"{where} has an empty term (two commas in a row, a comma at an end, or "
                f"nothing on one side of '{_ARROW}')"
            )
        if len(sides) == 1 and len(sides[0]) < 2:
            raise SynonymsError(
                f"{where} is one term: list equivalent terms separated by commas "
                f"(`a, b`) or map them with '{_ARROW}' (`a => b`)"
            )
        inputs, outputs = sides if len(sides) == 2 else (sides[0], sides[0])
        rules.append(Rule(number, tuple(inputs), tuple(outputs)))
    return tuple(rules)


def _split(line: str) -> list[list[str]]:
    """A line's terms: split at unescaped commas, and into sides at unescaped `=>`."""
    sides, terms, term = [], [], []
    position = 0
    while position < len(line):
        char = line[position]
        if char == "\\":
            if position + 1 == len(line):
                raise SynonymsError("a '\\' at the end of the line escapes nothing")
            term.append(line[position + 1])
            position += 2
            continue
        if char == ",":
            terms.append("".join(term))
            term = []
        elif line.startswith(_ARROW, position):
            sides.append([*terms, "".join(term)])
            terms, term = [], []
            position += len(_ARROW)
            continue
        else:
            term.append(char)
        position += 1
    sides.append([*terms, "".join(term)])
    return sides


def read(path: str | Path) -> str:
    """A synonyms file's text (UTF-8)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SynonymsError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise SynonymsError(f"{path}: cannot read the synonyms file ({err.strerror})") from None


def fingerprint(text: str) -> str:
    """The sha256 of a synonyms file's text, as its manifests record it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Synonyms:
    """The rules of `text`, with every term analysed into words by `analyse` (texts -> each
    text's words, the index's own analysis)."""

    def __init__(
        self, text: str, source: str, analyse: Callable[[list[str]], list[list[str]]]
    ) -> None:
        self.text = text
        self.rules = parse(text, source)
        terms = sorted({term for rule in self.rules for term in (*rule.inputs, *rule.outputs)})
        analysed = dict(zip(terms, map(tuple, analyse(terms)))) if terms else {}
        self.table: dict[tuple[str, ...], dict[tuple[str, ...], None]] = {}
        for rule in self.rules:
            for term in (*rule.inputs, *rule.outputs):
                if not analysed[term]:
                    raise SynonymsError(
                        f"{source}:{rule.line}: the term {term!r} has no word the search "
                        "indexes (only stop words or punctuation)"
                    )
            for term in rule.inputs:
                outputs = self.table.setdefault(analysed[term], {})
                outputs.update(dict.fromkeys(analysed[t] for t in rule.outputs))
        self.longest = max(map(len, self.table), default=0)

    def expand(self, words: list[str]) -> list[str]:
        """A query's analysed `words` with its synonyms: the longest rule input starting at
        each word, left to right, is replaced by the rule's outputs. Words no rule matched
        keep their places, the outputs' words follow, each once and only if not already
        there; without a match, `words` itself."""
        kept, added = [], []
        start = 0
        while start < len(words):
            for length in range(min(self.longest, len(words) - start), 0, -1):
                outputs = self.table.get(tuple(words[start : start + length]))
                if outputs:
                    added += [word for output in outputs for word in output]
                    start += length
                    break
            else:
                kept.append(words[start])
                start += 1
        if not added:
            return words
        return kept + [word for word in dict.fromkeys(added) if word not in kept]
