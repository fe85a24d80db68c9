"""A user's own catalog and interaction log, read from CSV or Parquet and validated row by row.

Policy: a bad row is skipped and reported with its file, line and reason. Loading stops with a
DataValidationError when a file lacks a required column, when more than `max_bad_fraction` of a
file's rows are bad, or, in strict mode, at the first bad row. The README in this folder gives the
schema and the rules for each column.
"""

import csv
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .dataset import (
    EVENT_WEIGHTS,
    RELEVANCE_COLUMNS,
    BadRow,
    Dataset,
    FileReport,
    relevance_from_logs,
)

CATALOG_REQUIRED = ("item_id", "title", "category")
INTERACTIONS_REQUIRED = ("user_id", "item_id", "event", "timestamp")
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00:00Z; larger values are likely milliseconds
_SHOWN_BAD_ROWS = 10
_INTEGER = r"[+-]?\d{1,18}(\.0*)?"  # "12.0" is accepted: spreadsheets write integers that way


class DataValidationError(ValueError):
    """The input cannot be used. `bad_rows` lists the rejected rows, when that is the cause."""

    def __init__(self, message: str, bad_rows: Sequence[BadRow] = ()) -> None:
        super().__init__(message)
        self.bad_rows = tuple(bad_rows)


def load(
    catalog: str | Path,
    interactions: str | Path | None = None,
    *,
    relevance: str | Path | None = None,
    max_bad_fraction: float = 0.05,
    strict: bool = False,
) -> Dataset:
    """Load a catalog and, optionally, an interaction log and graded queries (file type by
    extension).

    Interaction rows that name an item the catalog lacks, or one whose catalog row was skipped,
    are bad rows of the log. The search quality gate (`builders.encoder_variants`) judges on
    graded relevance: a `relevance` file (`query`, `item_id`, `grade` 1-3, e.g. judged by
    people), else the searches of the log (rows with a query, see `relevance_from_logs`).
    """
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be between 0 and 1, got {max_bad_fraction}")
    catalog_table = _read(Path(catalog))
    if catalog_table.rows == 0:
        raise DataValidationError(f"{catalog_table.path}: the catalog has no rows")
    items, catalog_report = _validate_catalog(catalog_table)
    _apply_policy(catalog_report, max_bad_fraction, strict)
    reports = [catalog_report]

    log = None
    if interactions is not None:
        log_table = _read(Path(interactions))
        log, log_report = _validate_interactions(log_table, items["item_id"].to_numpy())
        _apply_policy(log_report, max_bad_fraction, strict)
        reports.append(log_report)
        if log.empty:
            print(f"{log_table.path}: no interactions; using the catalog only", file=sys.stderr)
            log = None

    graded = None
    if relevance is not None:
        graded, relevance_report = _validate_relevance(
            _read(Path(relevance)), items["item_id"].to_numpy()
        )
        _apply_policy(relevance_report, max_bad_fraction, strict)
        reports.append(relevance_report)
        if graded.empty:
            raise DataValidationError(f"{relevance}: no graded query left")

    return Dataset(
        name="files",
        catalog=items,
        interactions=log,
        users=None if log is None else pd.DataFrame({"user_id": np.unique(log["user_id"])}),
        relevance=graded
        if relevance is not None
        else (None if log is None else relevance_from_logs(log)),
        params={
            "catalog": str(catalog),
            "interactions": None if interactions is None else str(interactions),
            "relevance": None if relevance is None else str(relevance),
            "max_bad_fraction": max_bad_fraction,
            "strict": strict,
        },
        reports=tuple(reports),
    )


@dataclass
class _Table:
    """A file's rows as read: raw values, the line (or Parquet row) each came from, and the
    records that did not split into the header's fields."""

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray
    malformed: list[BadRow]

    @property
    def rows(self) -> int:
        return len(self.frame) + len(self.malformed)

    def require(self, columns: Sequence[str]) -> None:
        missing = [column for column in columns if column not in self.frame.columns]
        if missing:
            found = ", ".join(map(str, self.frame.columns)) or "none"
            raise DataValidationError(
                f"{self.path}: missing required column(s): {', '.join(missing)} (found: {found})"
            )


class _Problems:
    """The first problem found in each row of a table."""

    def __init__(self, table: _Table) -> None:
        self.table = table
        self.reasons = np.full(len(table.frame), None, dtype=object)

    @property
    def ok(self) -> np.ndarray:
        return pd.isna(self.reasons)

    def add(self, bad: np.ndarray, reason: str | Callable[[int], str]) -> None:
        """Record `reason` (or reason(row index)) for the bad rows that have no problem yet."""
        rows = np.flatnonzero(np.asarray(bad, dtype=bool) & self.ok)
        self.reasons[rows] = [reason if isinstance(reason, str) else reason(r) for r in rows]

    def report(self) -> FileReport:
        rows = np.flatnonzero(~self.ok)
        found = [BadRow(self.table.path, int(self.table.lines[r]), self.reasons[r]) for r in rows]
        bad_rows = sorted(self.table.malformed + found, key=lambda bad: bad.line)
        return FileReport(self.table.path, self.table.rows, tuple(bad_rows))


def _read(path: Path) -> _Table:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in {".parquet", ".pq"}:
        return _read_parquet(path)
    raise DataValidationError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")


def _read_csv(path: Path) -> _Table:
    rows: list[list[str]] = []
    lines: list[int] = []
    malformed: list[BadRow] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            if not header:
                raise DataValidationError(f"{path}: the file is empty; expected a header line")
            duplicated = sorted({name for name in header if header.count(name) > 1})
            if duplicated:
                raise DataValidationError(f"{path}: duplicated column(s): {', '.join(duplicated)}")
            line = reader.line_num + 1
            for record in reader:
                if len(record) == len(header):
                    rows.append(record)
                    lines.append(line)
                elif any(field.strip() for field in record):
                    reason = f"expected {len(header)} fields, found {len(record)}"
                    malformed.append(BadRow(path, line, reason))
                line = reader.line_num + 1
    except UnicodeDecodeError:
        raise DataValidationError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except csv.Error as error:
        raise DataValidationError(f"{path}:{line}: unreadable CSV: {error}") from None
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    return _Table(path, frame, np.array(lines, dtype=np.int64), malformed)


def _read_parquet(path: Path) -> _Table:
    try:
        frame = pq.read_table(path).to_pandas().reset_index(drop=True)
    except (pa.ArrowException, OSError) as error:
        raise DataValidationError(f"{path}: unreadable Parquet: {error}") from None
    frame.columns = [str(name).strip() for name in frame.columns]
    return _Table(path, frame, np.arange(1, len(frame) + 1), [])


def _validate_catalog(table: _Table) -> tuple[pd.DataFrame, FileReport]:
    table.require(CATALOG_REQUIRED)
    frame = table.frame
    problems = _Problems(table)
    item_id = _integer_column(frame, "item_id", problems)
    title = _required_text(frame, "title", problems)
    category = _required_text(frame, "category", problems)
    price = _price_column(frame, problems)

    # Among otherwise good rows, the first row of an item_id wins.
    ok = problems.ok
    first_line = pd.Series(table.lines[ok], index=item_id[ok]).groupby(level=0).first()
    duplicate = np.zeros(len(frame), dtype=bool)
    duplicate[ok] = pd.Series(item_id[ok]).duplicated().to_numpy()
    problems.add(
        duplicate,
        lambda r: f"duplicate item_id {item_id[r]} (first on line {first_line[item_id[r]]})",
    )

    ok = problems.ok
    columns = {
        "item_id": item_id[ok],
        "title": title[ok].to_numpy(),
        "category": category[ok].to_numpy(),
        "brand": _optional_text(frame, "brand")[ok].to_numpy(),
        "price": price[ok],
    }
    items = pd.concat([pd.DataFrame(columns), _free_columns(frame, list(columns), ok)], axis=1)
    return items, problems.report()


def _validate_interactions(
    table: _Table, known_items: np.ndarray
) -> tuple[pd.DataFrame, FileReport]:
    table.require(INTERACTIONS_REQUIRED)
    frame = table.frame
    problems = _Problems(table)
    user_id = _integer_column(frame, "user_id", problems)
    item_id = _integer_column(frame, "item_id", problems)
    problems.add(
        ~np.isin(item_id, known_items),
        lambda r: f"unknown item_id {item_id[r]} (not in the catalog)",
    )
    event = _required_text(frame, "event", problems).str.lower()
    vocabulary = ", ".join(EVENT_WEIGHTS)
    problems.add(
        ~event.isin(list(EVENT_WEIGHTS)).to_numpy(),
        lambda r: f"unknown event {event[r]!r} (expected one of: {vocabulary})",
    )
    timestamp = _timestamp_column(frame, problems)

    ok = problems.ok
    columns = {
        "user_id": user_id[ok],
        "item_id": item_id[ok],
        "event": event[ok].to_numpy(),
        "timestamp": timestamp[ok],
        "query": _optional_text(frame, "query")[ok].to_numpy(),
    }
    log = pd.concat([pd.DataFrame(columns), _free_columns(frame, list(columns), ok)], axis=1)
    return log, problems.report()


def _validate_relevance(table: _Table, known_items: np.ndarray) -> tuple[pd.DataFrame, FileReport]:
    table.require(list(RELEVANCE_COLUMNS))
    frame = table.frame
    problems = _Problems(table)
    query = _required_text(frame, "query", problems)
    item_id = _integer_column(frame, "item_id", problems)
    problems.add(
        ~np.isin(item_id, known_items),
        lambda r: f"unknown item_id {item_id[r]} (not in the catalog)",
    )
    grade = _integer_column(frame, "grade", problems)
    problems.add((grade < 1) | (grade > 3), lambda r: f"grade {grade[r]} is not 1, 2 or 3")
    ok = problems.ok
    graded = pd.DataFrame(
        {"query": query[ok].to_numpy(), "item_id": item_id[ok], "grade": grade[ok]}
    )
    graded = graded.sort_values(["query", "item_id"], kind="stable").reset_index(drop=True)
    return graded, problems.report()


def _apply_policy(report: FileReport, max_bad_fraction: float, strict: bool) -> None:
    """Stop on too many bad rows (any, when strict); otherwise print what was skipped."""
    if not report.bad_rows:
        return
    share = report.skipped / report.rows
    shown = "".join(f"\n  {bad}" for bad in report.bad_rows[:_SHOWN_BAD_ROWS])
    if report.skipped > _SHOWN_BAD_ROWS:
        shown += f"\n  ... and {report.skipped - _SHOWN_BAD_ROWS} more"
    counts = f"{report.skipped} of {report.rows} rows ({share:.1%})"
    if strict or share > max_bad_fraction:
        limit = "strict mode allows none" if strict else f"the limit is {max_bad_fraction:.1%}"
        message = f"{report.file}: {counts} are bad; {limit}:{shown}"
        raise DataValidationError(message, report.bad_rows)
    print(f"{report.file}: skipped {counts}:{shown}", file=sys.stderr)


def _text(column: pd.Series) -> pd.Series:
    """Stripped strings, None where missing or blank."""
    text = column.astype(str).str.strip().astype(object)
    text[column.isna().to_numpy() | (text == "").to_numpy()] = None
    return text


def _required_text(frame: pd.DataFrame, name: str, problems: _Problems) -> pd.Series:
    text = _text(frame[name])
    problems.add(text.isna().to_numpy(), f"missing {name}")
    return text


def _optional_text(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        return pd.Series(np.full(len(frame), None, dtype=object))
    return _text(frame[name])


def _free_columns(frame: pd.DataFrame, taken: Sequence[str], ok: np.ndarray) -> pd.DataFrame:
    """The file's further columns in the good rows, text ones stripped with blanks as None."""
    free = {
        name: _text(frame[name]) if frame[name].dtype == object else frame[name]
        for name in frame.columns
        if name not in taken
    }
    return pd.DataFrame(free, index=frame.index)[ok].reset_index(drop=True)


def _parse_integers(column: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int64 values, 0 where not valid; the missing rows; the valid rows)."""
    missing = column.isna().to_numpy()
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.fillna(0).to_numpy(dtype=np.int64), missing, ~missing
    if pd.api.types.is_float_dtype(column.dtype):
        raw = column.astype("float64").to_numpy()
        valid = np.isfinite(raw) & (raw == np.round(raw)) & (np.abs(raw) < 2**63)
        return np.where(valid, raw, 0).astype(np.int64), missing, valid
    text = _text(column)
    try:  # the common case, every value a plain integer, parsed in one pass
        numbers = pd.to_numeric(text)
        if numbers.dtype == np.int64:
            return numbers.to_numpy(), missing, ~missing
    except (ValueError, TypeError):
        pass
    valid = text.str.fullmatch(_INTEGER, na=False).to_numpy(dtype=bool)
    values = np.zeros(len(text), dtype=np.int64)
    values[valid] = text[valid].str.replace(r"\.0*$", "", regex=True).astype(np.int64)
    return values, text.isna().to_numpy(), valid


def _integer_column(frame: pd.DataFrame, name: str, problems: _Problems) -> np.ndarray:
    """The column as int64 (0 in bad rows), reporting missing and non-integer values."""
    values, missing, valid = _parse_integers(frame[name])
    raw = frame[name].to_numpy()
    problems.add(missing, f"missing {name}")
    problems.add(~valid, lambda r: f"{name} {raw[r]!r} is not an integer")
    return values


def _price_column(frame: pd.DataFrame, problems: _Problems) -> np.ndarray:
    """Prices as float64, NaN where missing; unparsable, negative or infinite ones are bad."""
    if "price" not in frame.columns:
        return np.full(len(frame), np.nan)
    column = frame["price"]
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.astype("float64").to_numpy()
        missing = np.isnan(values)
    else:
        text = _text(column)
        missing = text.isna().to_numpy()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
    bad = ~missing & ~(np.isfinite(values) & (values >= 0))
    raw = column.to_numpy()
    problems.add(bad, lambda r: f"price {raw[r]!r} is not a number >= 0")
    return np.where(bad, np.nan, values)


def _timestamp_column(frame: pd.DataFrame, problems: _Problems) -> np.ndarray:
    """Seconds since 1970-01-01 UTC from integers, ISO 8601 text or Parquet timestamps."""
    column = frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        values, missing = _epoch_seconds(column), column.isna().to_numpy()
        valid = ~missing
    else:
        values, missing, valid = _parse_integers(column)
        if not pd.api.types.is_numeric_dtype(column.dtype):
            dates = pd.to_datetime(
                _text(column).where(~valid), utc=True, errors="coerce", format="ISO8601"
            )
            is_date = dates.notna().to_numpy()
            values = np.where(is_date, _epoch_seconds(dates), values)
            valid = valid | is_date
    raw = column.to_numpy()
    problems.add(missing, "missing timestamp")
    problems.add(~valid, lambda r: f"timestamp {raw[r]!r} is neither integer seconds nor ISO 8601")
    problems.add(
        (values < 0) | (values >= MAX_TIMESTAMP),
        lambda r: f"timestamp {raw[r]!r} is out of range (expected seconds since 1970)",
    )
    return values


def _epoch_seconds(times: pd.Series) -> np.ndarray:
    """Whole seconds since the epoch (naive times are taken as UTC); 0 where missing."""
    utc = times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")
    seconds = (utc - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.fillna(0).to_numpy(dtype=np.int64)
