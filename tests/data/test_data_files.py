"""The files source: good CSV and Parquet input, each kind of bad row, the skip/stop policy."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from builders.data import BadRow, Dataset, DataValidationError, load_dataset

README = Path(__file__).resolve().parents[2] / "builders" / "data" / "README.md"
CATALOG_HEADER = "item_id,title,category,brand,price,color"
EVENTS_HEADER = "user_id,item_id,event,timestamp,query"
GOOD_ROWS = 40  # one bad row among them is 1/41 = 2.4%, under the 5% limit


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def catalog_rows(n: int = GOOD_ROWS) -> list[str]:
    return [f"{i},Item {i},{'Shoes' if i % 2 else 'Bags'},Acme,{i}.5,red" for i in range(1, n + 1)]


def event_rows(n: int = GOOD_ROWS) -> list[str]:
    return [f"{i % 7 + 1},{i % 10 + 1},view,{1_700_000_000 + i},shoes" for i in range(n)]


def load(catalog: Path, interactions: Path | None = None, **options: object) -> Dataset:
    return load_dataset("files", catalog=catalog, interactions=interactions, **options)


def test_good_csv_files(tmp_path: Path) -> None:
    catalog = write(
        tmp_path / "catalog.csv",
        CATALOG_HEADER,
        [
            '1,"Runner, Red",Shoes,Acme,19.99,red',
            "2,Tote,Bags,,,",
            " 3 , Boot ,Shoes,Zeta,120,brown",
        ],
    )
    events = write(
        tmp_path / "events.csv",
        EVENTS_HEADER + ",session_id",
        [
            "7,1,view,1709294400,red runner,s1",
            "7,1, Purchase ,2024-03-01T12:05:00Z,red runner,s1",
            "8,2,click,2024-03-01,,s2",
            "8,3,add_to_cart,1709298000,,s2",
        ],
    )
    data = load(catalog, events)
    items = data.catalog
    assert items["item_id"].tolist() == [1, 2, 3]
    assert items["title"].tolist() == ["Runner, Red", "Tote", "Boot"]
    assert items["brand"].tolist() == ["Acme", None, "Zeta"]
    assert items["price"].iloc[0] == 19.99 and np.isnan(items["price"].iloc[1])
    assert items["color"].tolist() == ["red", None, "brown"]
    log = data.interactions
    assert log is not None
    assert log.dtypes["timestamp"] == np.int64
    assert log["timestamp"].tolist() == [1709251200, 1709294400, 1709294700, 1709298000]
    assert log["event"].tolist() == ["click", "view", "purchase", "add_to_cart"]
    assert log["query"].tolist() == [None, "red runner", "red runner", None]
    assert log["session_id"].tolist() == ["s2", "s1", "s1", "s2"]
    assert data.users["user_id"].tolist() == [7, 8]
    assert data.relevance.values.tolist() == [["red runner", 1, 3]]
    assert [report.skipped for report in data.reports] == [0, 0]
    assert data.fingerprint == load(catalog, events).fingerprint


def test_parquet_gives_the_same_dataset_as_csv(tmp_path: Path) -> None:
    csv_catalog = write(tmp_path / "catalog.csv", CATALOG_HEADER, catalog_rows())
    csv_events = write(tmp_path / "events.csv", EVENTS_HEADER, event_rows())
    items = pd.read_csv(csv_catalog)
    items["price"] = items["price"].astype(float)
    items.to_parquet(tmp_path / "catalog.parquet")
    events = pd.read_csv(csv_events)
    events["timestamp"] = pd.to_datetime(events["timestamp"], unit="s")
    events["user_id"] = events["user_id"].astype("Int64")
    events.to_parquet(tmp_path / "events.pq")

    from_csv = load(csv_catalog, csv_events)
    from_parquet = load(tmp_path / "catalog.parquet", tmp_path / "events.pq")
    assert from_parquet.fingerprint == from_csv.fingerprint
    assert len(from_parquet.interactions) == GOOD_ROWS


def test_bad_parquet_rows_are_reported_by_row_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "catalog.parquet"
    frame = pd.DataFrame(
        {
            "item_id": pd.array([*range(1, GOOD_ROWS + 1), None], dtype="Int64"),
            "title": [f"Item {i}" for i in range(GOOD_ROWS + 1)],
            "category": ["Shoes"] * (GOOD_ROWS + 1),
            "price": [1.0] * GOOD_ROWS + [-1.0],
        }
    )
    frame.to_parquet(path)
    data = load(path)
    assert data.reports[0].bad_rows == (BadRow(path, GOOD_ROWS + 1, "missing item_id"),)
    assert f"{path}:row {GOOD_ROWS + 1}: missing item_id" in capsys.readouterr().err


BAD_CATALOG_ROWS = [
    (",No id,Shoes,Acme,1,red", "missing item_id"),
    ("abc,Bad id,Shoes,Acme,1,red", "item_id 'abc' is not an integer"),
    ("7.5,Half id,Shoes,Acme,1,red", "item_id '7.5' is not an integer"),
    ("5,Again,Shoes,Acme,1,red", "duplicate item_id 5 (first on line 6)"),
    ("99,,Shoes,Acme,1,red", "missing title"),
    ("99,Item,,Acme,1,red", "missing category"),
    ("99,Item,Shoes,Acme,12 euros,red", "price '12 euros' is not a number >= 0"),
    ("99,Item,Shoes,Acme,-3,red", "price '-3' is not a number >= 0"),
    ("99,Item,Shoes", "expected 6 fields, found 3"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_CATALOG_ROWS)
def test_each_bad_catalog_row_is_skipped_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, reason: str
) -> None:
    path = write(tmp_path / "catalog.csv", CATALOG_HEADER, [*catalog_rows(), row])
    data = load(path)
    bad_line = GOOD_ROWS + 2  # after the header and the good rows
    assert data.reports[0].bad_rows == (BadRow(path, bad_line, reason),)
    assert len(data.catalog) == GOOD_ROWS
    err = capsys.readouterr().err
    assert f"{path}: skipped 1 of {GOOD_ROWS + 1} rows (2.4%)" in err
    assert f"{path}:{bad_line}: {reason}" in err


BAD_EVENT_ROWS = [
    (",1,view,1700000000,", "missing user_id"),
    ("u1,1,view,1700000000,", "user_id 'u1' is not an integer"),
    ("1,,view,1700000000,", "missing item_id"),
    ("1,999,view,1700000000,", "unknown item_id 999 (not in the catalog)"),
    (
        "1,1,like,1700000000,",
        "unknown event 'like' (expected one of: view, click, add_to_cart, purchase)",
    ),
    ("1,1,,1700000000,", "missing event"),
    ("1,1,view,,", "missing timestamp"),
    ("1,1,view,last tuesday,", "timestamp 'last tuesday' is neither integer seconds nor ISO 8601"),
    (
        "1,1,view,1700000000000,",
        "timestamp '1700000000000' is out of range (expected seconds since 1970)",
    ),
    ("1,1,view,-5,", "timestamp '-5' is out of range (expected seconds since 1970)"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_EVENT_ROWS)
def test_each_bad_log_row_is_skipped_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, reason: str
) -> None:
    catalog = write(tmp_path / "catalog.csv", CATALOG_HEADER, catalog_rows())
    events = write(tmp_path / "events.csv", EVENTS_HEADER, [*event_rows(), row])
    data = load(catalog, events)
    bad_line = GOOD_ROWS + 2
    assert data.reports[1].bad_rows == (BadRow(events, bad_line, reason),)
    assert len(data.interactions) == GOOD_ROWS
    assert f"{events}:{bad_line}: {reason}" in capsys.readouterr().err


def test_log_rows_for_skipped_catalog_rows_are_unknown_items(tmp_path: Path) -> None:
    catalog = write(tmp_path / "catalog.csv", CATALOG_HEADER, [*catalog_rows(), "41,,Bags,,,"])
    events = write(tmp_path / "events.csv", EVENTS_HEADER, [*event_rows(), "1,41,view,5,"])
    data = load(catalog, events)
    assert [str(bad) for report in data.reports for bad in report.bad_rows] == [
        f"{catalog}:42: missing title",
        f"{events}:42: unknown item_id 41 (not in the catalog)",
    ]


def test_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    rows = ["x,First,Shoes,,,", '1,"Two\nline title",Shoes,,,', "2,Ok,Shoes,,,", ""]
    rows.append("2,Dup,Shoes,,,")
    path = write(tmp_path / "catalog.csv", CATALOG_HEADER, rows)
    data = load(path, max_bad_fraction=0.5)
    assert data.catalog["title"].tolist() == ["Two\nline title", "Ok"]
    assert [str(bad) for bad in data.reports[0].bad_rows] == [
        f"{path}:2: item_id 'x' is not an integer",
        f"{path}:7: duplicate item_id 2 (first on line 5)",
    ]


def test_too_many_bad_rows_stop_the_load(tmp_path: Path) -> None:
    bad = ["x1,A,Shoes,,,", "x2,B,Shoes,,,", "x3,C,Shoes,,,"]
    path = write(tmp_path / "catalog.csv", CATALOG_HEADER, [*catalog_rows(), *bad])
    with pytest.raises(DataValidationError) as error:
        load(path)
    message = str(error.value)
    assert message.startswith(f"{path}: 3 of 43 rows (7.0%) are bad; the limit is 5.0%:")
    assert f"{path}:44: item_id 'x3' is not an integer" in message
    assert [row.line for row in error.value.bad_rows] == [42, 43, 44]
    assert len(load(path, max_bad_fraction=0.1).catalog) == GOOD_ROWS


def test_the_limit_applies_to_the_log_too(tmp_path: Path) -> None:
    catalog = write(tmp_path / "catalog.csv", CATALOG_HEADER, catalog_rows())
    bad = [f"1,{500 + i},view,1700000000," for i in range(5)]
    events = write(tmp_path / "events.csv", EVENTS_HEADER, [*event_rows(), *bad])
    with pytest.raises(DataValidationError, match=r"events.csv: 5 of 45 rows \(11.1%\) are bad"):
        load(catalog, events)


def test_a_share_at_the_limit_is_skipped_and_the_listing_is_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = catalog_rows(285) + [f"x{i},Bad,Shoes,,," for i in range(15)]  # 15/300 = 5.0%
    path = write(tmp_path / "catalog.csv", CATALOG_HEADER, rows)
    data = load(path)
    assert data.reports[0].skipped == 15
    err = capsys.readouterr().err
    assert f"{path}:296: item_id 'x9' is not an integer" in err
    assert "x10" not in err
    assert "... and 5 more" in err


def test_strict_mode_stops_at_any_bad_row(tmp_path: Path) -> None:
    clean = write(tmp_path / "clean.csv", CATALOG_HEADER, catalog_rows())
    assert len(load(clean, strict=True).catalog) == GOOD_ROWS
    dirty = write(tmp_path / "dirty.csv", CATALOG_HEADER, [*catalog_rows(), "1,Dup,Shoes,,,"])
    with pytest.raises(DataValidationError, match="1 of 41 rows .* strict mode allows none"):
        load(dirty, strict=True)


def test_missing_required_columns_stop_the_load(tmp_path: Path) -> None:
    catalog = write(tmp_path / "catalog.csv", "item_id,title,price", ["1,Shoe,3"])
    with pytest.raises(DataValidationError) as error:
        load(catalog)
    assert str(error.value) == (
        f"{catalog}: missing required column(s): category (found: item_id, title, price)"
    )
    good = write(tmp_path / "good.csv", CATALOG_HEADER, catalog_rows())
    events = write(tmp_path / "events.csv", "user_id,item_id,event", ["1,1,view"])
    with pytest.raises(DataValidationError, match=r"missing required column\(s\): timestamp"):
        load(good, events)


def test_catalog_only(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.csv", CATALOG_HEADER, catalog_rows())
    data = load(path)
    assert data.interactions is None
    assert data.users is None
    assert data.relevance is None
    assert len(data.reports) == 1
    assert (data.item_popularity() == 0).all()
    assert data.fingerprint == load(path).fingerprint


def test_a_log_without_rows_means_no_interactions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = write(tmp_path / "catalog.csv", CATALOG_HEADER, catalog_rows())
    events = write(tmp_path / "events.csv", EVENTS_HEADER, [])
    assert load(catalog, events).interactions is None
    assert "no interactions; using the catalog only" in capsys.readouterr().err


def test_a_relevance_file_grades_queries_of_a_catalog_only_build(tmp_path: Path) -> None:
    catalog = write(tmp_path / "catalog.csv", CATALOG_HEADER, catalog_rows())
    relevance = write(
        tmp_path / "graded.csv",
        "query,item_id,grade",
        ["red shoes,1,3", "red shoes,2,1", "mug,3,2", "mug,99999,2", "mug,4,5"],
    )
    dataset = load(catalog, relevance=relevance, max_bad_fraction=0.5)
    assert dataset.relevance.to_dict("list") == {
        "query": ["mug", "red shoes", "red shoes"],
        "item_id": [3, 1, 2],
        "grade": [2, 3, 1],
    }
    with pytest.raises(DataValidationError) as error:
        load(catalog, relevance=relevance)
    message = str(error.value)
    assert "graded.csv:5: unknown item_id 99999 (not in the catalog)" in message
    assert "graded.csv:6: grade 5 is not 1, 2 or 3" in message
    no_grade = write(tmp_path / "bad.csv", "query,item_id", ["mug,3"])
    with pytest.raises(DataValidationError, match="missing required column.*grade"):
        load(catalog, relevance=no_grade)


def test_unusable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file: .*nowhere.csv"):
        load(tmp_path / "nowhere.csv")
    sheet = tmp_path / "catalog.xlsx"
    sheet.write_bytes(b"PK")
    with pytest.raises(DataValidationError, match="unsupported file type '.xlsx'"):
        load(sheet)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match="the file is empty"):
        load(empty)
    header_only = write(tmp_path / "header.csv", CATALOG_HEADER, [])
    with pytest.raises(DataValidationError, match="the catalog has no rows"):
        load(header_only)
    latin = tmp_path / "latin.csv"
    latin.write_bytes((CATALOG_HEADER + "\n1,Café,Food,,,\n").encode("latin-1"))
    with pytest.raises(DataValidationError, match="not UTF-8"):
        load(latin)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(DataValidationError, match="unreadable Parquet"):
        load(broken)
    with pytest.raises(ValueError, match="max_bad_fraction"):
        load(header_only, max_bad_fraction=5)


def test_the_readme_example_files_load(tmp_path: Path) -> None:
    catalog_text, events_text = re.findall(r"```csv\n(.*?)```", README.read_text(), re.DOTALL)
    (tmp_path / "catalog.csv").write_text(catalog_text)
    (tmp_path / "events.csv").write_text(events_text)
    data = load(tmp_path / "catalog.csv", tmp_path / "events.csv", strict=True)
    assert len(data.catalog) == 2
    assert data.interactions["event"].tolist() == ["view", "purchase", "click"]
    assert data.relevance.values.tolist() == [["trail sneakers", 101, 3]]
