"""Score a file of queries or user ids: bounded concurrency, progress, JSON Lines out.

Input: one request per line, blank lines skipped. For `search` a line is a
query, optionally followed by a tab and a user id; for `recommend` a line is a
user id. Output: one JSON object per request, in input order, with its line
number: the result, or the error that request got (a failed request never
stops the batch).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from clients.aio import AsyncClient
from clients.errors import ClientError, InvalidArgumentError, OverloadedError

KINDS = ("search", "recommend")


@dataclass
class Progress:
    done: int
    total: int
    errors: int
    seconds: float
    #: Of the errors, requests the server shed (`OverloadedError`): worth running again.
    overloaded: int = 0

    def line(self) -> str:
        rate = self.done / self.seconds if self.seconds > 0 else 0.0
        shed = f", {self.overloaded} overloaded" if self.overloaded else ""
        return (
            f"scored {self.done}/{self.total} ({self.errors} errors{shed}) "
            f"in {self.seconds:.1f} s, {rate:.0f}/s"
        )


def parse_line(kind: str, text: str) -> dict:
    """The request fields of one input line (raises InvalidArgumentError)."""
    text = text.rstrip("\r\n")
    if kind == "recommend":
        try:
            return {"user_id": int(text.strip())}
        except ValueError:
            raise InvalidArgumentError(f"not a user id: {text.strip()!r}") from None
    query, tab, user = text.partition("\t")
    if not tab:
        return {"query": query}
    try:
        return {"query": query, "user_id": int(user.strip())}
    except ValueError:
        raise InvalidArgumentError(f"not a user id after the tab: {user.strip()!r}") from None


async def _score(client: AsyncClient, kind: str, number: int, text: str, k: int) -> dict:
    record: dict = {"line": number}
    try:
        request = parse_line(kind, text)
        record.update(request)
        if kind == "search":
            result = await client.search(request["query"], request.get("user_id"), k)
        else:
            result = await client.recommend(request["user_id"], k)
    except ClientError as error:
        record.update(error=str(error), error_type=type(error).__name__)
        return record
    record.update(result.to_dict())
    return record


async def score_lines(
    client: AsyncClient,
    kind: str,
    lines: Iterable[str],
    write: Callable[[dict], None],
    *,
    k: int = 10,
    concurrency: int = 8,
    progress: Callable[[Progress], None] | None = None,
    every: float = 1.0,
) -> Progress:
    """Score `lines` with at most `concurrency` calls in flight; `write` gets each record
    in input order; `progress` is called at most every `every` seconds and at the end."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    requests = [(n, text) for n, text in enumerate(lines, 1) if text.strip()]
    state = Progress(0, len(requests), 0, 0.0)
    started = last_report = time.perf_counter()
    pending: deque[asyncio.Task] = deque()

    async def finish_oldest() -> None:
        nonlocal last_report
        record = await pending.popleft()
        write(record)
        state.done += 1
        state.errors += "error" in record
        state.overloaded += record.get("error_type") == OverloadedError.__name__
        state.seconds = time.perf_counter() - started
        if progress and time.perf_counter() - last_report >= every:
            progress(state)
            last_report = time.perf_counter()

    for number, text in requests:
        pending.append(asyncio.create_task(_score(client, kind, number, text, k)))
        if len(pending) >= concurrency:
            await finish_oldest()
    while pending:
        await finish_oldest()
    state.seconds = time.perf_counter() - started
    if progress:
        progress(state)
    return state


async def score_file(
    client: AsyncClient, kind: str, source: str, output: str, **options
) -> Progress:
    """`score_lines` from the text file `source` into the JSON Lines file `output`."""
    with open(source, encoding="utf-8", errors="replace") as lines:
        texts = lines.readlines()
    with open(output, "w", encoding="utf-8") as out:

        def write(record: dict) -> None:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")

        return await score_lines(client, kind, texts, write, **options)
