"""A closed-loop HTTP/JSON load generator: `concurrency` threads, each with one
keep-alive connection, each sending the next request of the list as soon as its last
answers (the list over and over for a duration, or each request once: a replay).

It treats every server the same (a POST of a prepared JSON body to a path), so
the naive FastAPI service and Triton's KServe v2 HTTP endpoint get the same load.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from dataclasses import dataclass

import numpy as np

from perf.latency import summary


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    throughput: float
    p50_ms: float
    p99_ms: float


def closed_loop(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    once: bool = False,
) -> LoadResult:
    """Run the load for `warmup_s + duration_s`; count only what completes after warm-up.
    With `once`, stop when every body has been sent once (`duration_s` then only bounds
    the run) and take the throughput over the time it took."""
    start = time.monotonic()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    next_body = itertools.count()  # shared: next() on it is atomic under the GIL
    finished = [measure_from] * concurrency

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < stop_at:
            n = next(next_body)
            if once and n >= len(bodies):
                break
            body = bodies[n % len(bodies)]
            sent = time.monotonic()
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
                ok = False
            done = time.monotonic()
            if sent >= measure_from and done <= stop_at:
                finished[index] = done
                if ok:
                    latencies[index].append(done - sent)
                else:
                    errors[index] += 1
        connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = np.array([x for per in latencies for x in per]) * 1000
    if merged.size == 0:
        return LoadResult(concurrency, 0, sum(errors), 0.0, float("nan"), float("nan"))
    elapsed = max(finished) - measure_from if once else duration_s
    return LoadResult(
        concurrency=concurrency,
        requests=int(merged.size),
        errors=sum(errors),
        throughput=merged.size / elapsed,
        **summary(merged),
    )
