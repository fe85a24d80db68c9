"""The synonyms file: its parser, the query expansion and the lexical stage that applies it."""

from __future__ import annotations

import numpy as np
import pytest

from builders import names
from builders.build import BuildOptions, build
from builders.runtime.lexical import LexicalIndex, synonyms_of, terms
from builders.runtime.synonyms import FILE, Rule, SynonymsError, fingerprint, parse, read

TITLES = [
    "Pine Clumping Cat Litter 40 lb",
    "Soft Toilet Paper, 12 Pack",
    "Television 55 inch",
    "Linen Sofa, Gray",
    "Garden Hose 50 ft",
]

RULES = """\
# merchandising, 2026-12
kitty litter, cat litter

loo roll => toilet paper
tv => tv, television
  # an indented comment
couch, settee, sofa
"""


def test_each_form_parses_with_its_line_number():
    assert parse(RULES, "rules.txt") == (
        Rule(2, ("kitty litter", "cat litter"), ("kitty litter", "cat litter")),
        Rule(4, ("loo roll",), ("toilet paper",)),
        Rule(5, ("tv",), ("tv", "television")),
        Rule(7, ("couch", "settee", "sofa"), ("couch", "settee", "sofa")),
    )


def test_mappings_take_several_terms_on_each_side_and_escapes():
    (rule,) = parse(r"a b, c => d, e f")
    assert (rule.inputs, rule.outputs) == (("a b", "c"), ("d", "e f"))
    (rule,) = parse(r"size 3\, 84 count, 3\=>84, c\#, back\\slash")
    assert rule.inputs == ("size 3, 84 count", "3=>84", "c#", "back\\slash")


def test_comments_and_blank_lines_alone_make_no_rules():
    assert parse("# nothing yet\n\n   \n") == ()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("sofa", "is one term"),
        ("sofa, , couch", "empty term"),
        ("sofa, couch,", "empty term"),
        ("sofa =>", "empty term"),
        ("=> sofa", "empty term"),
        ("a => b => c", "more than one '=>'"),
        ("sofa, couch\\", "escapes nothing"),
    ],
)
def test_a_line_that_does_not_parse_is_refused_with_file_and_line(line, message):
    with pytest.raises(SynonymsError, match=f"^rules.txt:3: .*{message}"):
        parse(f"# header\ncouch, sofa\n{line}\ntv => television\n", "rules.txt")


def test_a_term_the_index_cannot_see_is_refused_with_file_and_line():
    with pytest.raises(SynonymsError, match=r"^rules.txt:2: the term 'the' has no word"):
        synonyms_of("sofa, couch\nthe => a\n", "rules.txt")


def test_a_file_that_is_not_utf8_or_missing_is_refused(tmp_path):
    path = tmp_path / "rules.txt"
    path.write_bytes(b"caf\xe9, coffee\n")
    with pytest.raises(SynonymsError, match="rules.txt: not UTF-8"):
        read(path)
    with pytest.raises(SynonymsError, match="missing.txt: cannot read the synonyms file"):
        read(tmp_path / "missing.txt")


def test_expansion_replaces_the_longest_match_and_merges_rules():
    synonyms = synonyms_of(RULES + "kitty => cat\nsofa => sofa bed\n", "rules.txt")
    expand = synonyms.expand
    # Analysed words (stemmed): the longest input wins, the outputs follow, each once.
    assert expand(["kitti", "litter", "40"]) == ["40", "kitti", "litter", "cat"]
    assert expand(["kitti", "toy"]) == ["toy", "cat"]  # `kitty => cat` replaces it
    assert expand(["loo", "roll"]) == ["toilet", "paper"]
    assert expand(["tv", "stand"]) == ["stand", "tv", "televis"]
    # sofa is in an equivalence and a mapping: it becomes what both give it
    assert expand(["sofa"]) == ["couch", "sette", "sofa", "bed"]
    words = ["garden", "hose"]
    assert expand(words) is words  # no match: the very words


def test_expanded_query_scores_as_if_the_synonyms_were_typed_too():
    synonyms = synonyms_of(RULES, "rules.txt")
    plain = LexicalIndex.build(TITLES)
    expanded = LexicalIndex.build(TITLES, synonyms)
    assert terms(["kitty litter"], synonyms) == terms(["kitty litter cat"])
    np.testing.assert_array_equal(expanded.scores("kitty litter"), plain.scores("kitty litter cat"))
    indexes, scores, _ = expanded.search(["loo roll", "tv", "couch", "garden hose"], 2)
    assert indexes[:, 0].tolist() == [1, 2, 3, 4]
    assert plain.search(["loo roll"], 2)[0].tolist() == [[-1, -1]]  # no synonyms: no match
    # Queries no rule touches score exactly as without synonyms.
    np.testing.assert_array_equal(expanded.scores("garden hose"), plain.scores("garden hose"))


def test_the_synonyms_file_travels_with_the_saved_index(tmp_path):
    index = LexicalIndex.build(TITLES, synonyms_of(RULES, "rules.txt"))
    index.save(tmp_path)
    assert fingerprint((tmp_path / FILE).read_text()) == fingerprint(RULES)
    loaded = LexicalIndex.load(tmp_path)
    np.testing.assert_array_equal(
        loaded.search(["loo roll"], 3)[0], index.search(["loo roll"], 3)[0]
    )
    LexicalIndex.build(TITLES).save(tmp_path / "plain")
    assert LexicalIndex.load(tmp_path / "plain").synonyms is None


def test_a_bad_synonyms_file_is_refused_before_the_build_writes_anything(tmp_path, small_dataset):
    bad = tmp_path / "synonyms.txt"
    bad.write_text("sofa, couch\ntv => television => telly\n")
    repo = tmp_path / "repository"
    options = BuildOptions(repo=repo, synonyms=bad, only=(names.HYBRID_RETRIEVAL, names.SEARCH))
    with pytest.raises(SynonymsError, match=f"{bad}:2: "):
        build(options, small_dataset)
    assert not repo.exists()


def test_synonyms_without_the_lexical_stage_are_refused(tmp_path, small_dataset):
    good = tmp_path / "synonyms.txt"
    good.write_text("sofa, couch\n")
    options = BuildOptions(repo=tmp_path / "repository", synonyms=good, only=(names.SEARCH,))
    with pytest.raises(ValueError, match="the synonyms travel in hybrid_retrieval"):
        build(options, small_dataset)
