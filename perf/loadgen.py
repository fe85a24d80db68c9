"""A closed-loop HTTP/JSON load generator: `concurrency` threads, each with one
keep-alive connection, each sending its next request as soon as the last answers.

It treats every server the same (a POST of a prepared JSON body to a path), so
the naive FastAPI service and Triton's KServe v2 HTTP endpoint get the same load.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass

import numpy as np


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
) -> LoadResult:
    """Run the load for `warmup_s + duration_s`; count only what completes after warm-up."""
    start = time.monotonic()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        headers = {"Content-Type": "application/json"}
        n = index
        while time.monotonic() < stop_at:
            body = bodies[n % len(bodies)]
            n += concurrency
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
    return LoadResult(
        concurrency=concurrency,
        requests=int(merged.size),
        errors=sum(errors),
        throughput=merged.size / duration_s,
        p50_ms=float(np.percentile(merged, 50)),
        p99_ms=float(np.percentile(merged, 99)),
    )
