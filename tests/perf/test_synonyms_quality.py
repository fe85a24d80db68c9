"""The synonyms measurement's own logic: the generated synonyms and the dense query text."""

import json

from builders.data.marketplace import SYNONYMS
from builders.runtime.lexical import synonyms_of
from perf.evaluation.quality import ROOT
from perf.evaluation.synonyms_quality import ARMS, OUT, dense_expander, taxonomy_synonyms


def test_the_generated_and_the_written_synonyms_parse():
    assert len(synonyms_of(taxonomy_synonyms(), "taxonomy").rules) > 20
    assert synonyms_of(SYNONYMS.read_text(), str(SYNONYMS)).rules


def test_the_dense_query_gets_the_text_of_the_synonyms_it_lacks():
    expand = dense_expander(
        synonyms_of("kitty litter, cat litter\nloo roll => toilet paper\n", "s")
    )
    assert expand("Kitty Litters 40 lb") == "Kitty Litters 40 lb cat litter"
    assert expand("loo roll") == "loo roll toilet paper"
    assert expand("garden hose") == "garden hose"


def test_the_readme_quotes_the_results_file():
    report = json.loads(OUT.read_text())
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Synonyms") :].split("\n## ", 1)[0]
    assert f"`docs/results/synonyms.json`,\n  {report['date']}" in section
    for dataset in ("catalog-only", "synthetic"):
        for arm in ARMS:
            assert f"{report[dataset]['arms'][arm]['ndcg_at_10']['served']:.4f}" in section
    for kind in ("synonym", "exact"):
        for arm in ARMS:
            by_kind = report["catalog-only"]["arms"][arm]["served_ndcg_at_10_by_kind"]
            assert f"{by_kind[kind]:.4f}" in section
