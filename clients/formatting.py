"""Plain-text tables for the CLI (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from clients.results import CATALOG_FIELDS, Result

TEXT_WIDTH = 48


def _cell(value, spec: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, spec)
    text = " ".join(str(value).split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 3] + "..."


def _numeric(column: Sequence) -> bool:
    values = [v for v in column if v is not None]
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence], formats: Mapping[str, str] | None = None
) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left-aligned.
    `formats` gives a column's float format (default `.4f`)."""
    specs = [(formats or {}).get(h, ".4f") for h in headers]
    cells = [[_cell(v, spec) for v, spec in zip(row, specs)] for row in rows]
    numeric = [_numeric([row[i] for row in rows]) for i in range(len(headers))]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values):
        padded = (
            v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def result_table(result: Result) -> str:
    """A heading (model, answering version, endpoint) and one row per item."""
    shown = [f for f in CATALOG_FIELDS if any(getattr(i, f) is not None for i in result.items)]
    headers = ["#", "item_id", *shown, "score"]
    rows = [
        [rank, item.item_id, *(getattr(item, f) for f in shown), item.score]
        for rank, item in enumerate(result.items, 1)
    ]
    heading = (
        f"{result.model}: {len(result.items)} items from release {result.version} "
        f"at {result.endpoint}"
    )
    if result.truncated:
        heading += " (truncated: fewer items exist than asked for)"
    return heading + "\n" + format_table(headers, rows, {"price": ".2f"})


def rows_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """A table of dicts (health, models), one column per key in `columns`."""
    return format_table(columns, [[row.get(c, "") for c in columns] for row in rows])
