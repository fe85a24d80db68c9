"""Metric-gated canary promotion and rollback.

Compares the canary with the stable track of a model and decides:

* **rollback** when the canary is clearly worse: its p99 latency is above
  ``max_p99_ratio`` times stable's *and* more than ``max_p99_delta_ms`` higher; its
  error rate is above ``max_error_rate`` and more than ``max_error_rate_delta`` above
  stable's; or its top-k results overlap stable's less than ``min_overlap``;
* **hold** when there is not enough evidence yet (too few requests, no latency quantiles);
* **promote** otherwise.

The numbers come from Triton's Prometheus metrics, either scraped twice from each
server's ``/metrics`` (counter deltas over ``--window`` seconds; p99 from the
``nv_inference_request_summary_us`` quantiles that ``--metrics-config
summary_latencies=true`` exports) or queried from a Prometheus server that scrapes
the chart's pods (series labelled ``track="stable"`` / ``track="canary"``). Top-k
overlap is measured by sending the same queries to both over HTTP.

Every URL may be ``https://`` (e.g. the Gateway's HTTPS listener): ``--tls-ca`` names the CA
that signed the server's certificate (default: the system's CAs), and ``--tls-cert`` /
``--tls-key`` a client certificate for a listener that demands one (mutual TLS). The gate
needs only the standard library and PyYAML, so it runs from a bare Python image, without
this repository's client (`clients`) and its Triton client dependencies.

The command prints the decision, its reasons and the ``helm upgrade`` that applies it.
Exit status: 0 promote, 3 hold, 4 rollback, 1 error.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

PROMOTE, HOLD, ROLLBACK = "promote", "hold", "rollback"
EXIT_CODES = {PROMOTE: 0, HOLD: 3, ROLLBACK: 4}
SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
SUMMARY = "nv_inference_request_summary_us"
P99 = "0.99"

_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


class GateError(RuntimeError):
    """The metrics or results needed for a decision could not be read."""


# -- decision -----------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Limits the canary must stay within to be promoted."""

    max_p99_ratio: float = 1.2
    max_p99_delta_ms: float = 5.0
    max_error_rate: float = 0.01
    max_error_rate_delta: float = 0.005
    min_overlap: float = 0.8
    min_requests: int = 100


@dataclass(frozen=True)
class TrackStats:
    """What one track served during the observation window."""

    requests: float
    failures: float
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Overlap:
    """Mean top-k overlap between stable and canary results for the same queries (those
    stable answered); a canary call answered with an error scores 0 and is counted."""

    mean: float
    queries: int
    k: int
    canary_failures: int = 0


@dataclass(frozen=True)
class Decision:
    action: str
    reasons: tuple[str, ...]


def decide(
    stable: TrackStats,
    canary: TrackStats,
    thresholds: Thresholds,
    overlap: Overlap | None = None,
) -> Decision:
    """Promote, hold or roll back, with one reason per check."""
    failed: list[str] = []
    missing: list[str] = []
    passed: list[str] = []
    t = thresholds

    enough = True
    for name, track in (("stable", stable), ("canary", canary)):
        if track.requests < t.min_requests:
            enough = False
            missing.append(f"{name} served {track.requests:.0f} requests, need {t.min_requests}")

    if enough:
        rate_text = (
            f"error rate canary {canary.error_rate:.2%} ({canary.failures:.0f}/"
            f"{canary.requests:.0f}), stable {stable.error_rate:.2%}"
        )
        if (
            canary.error_rate > t.max_error_rate
            and canary.error_rate - stable.error_rate > t.max_error_rate_delta
        ):
            failed.append(
                f"{rate_text}: above {t.max_error_rate:.2%} and "
                f"{t.max_error_rate_delta:.2%} over stable"
            )
        else:
            passed.append(rate_text)

        if stable.p99_ms is None or canary.p99_ms is None:
            missing.append(
                "no p99 latency: start tritonserver with --metrics-config summary_latencies=true"
            )
        else:
            ratio = canary.p99_ms / stable.p99_ms if stable.p99_ms > 0 else math.inf
            delta = canary.p99_ms - stable.p99_ms
            p99_text = (
                f"p99 canary {canary.p99_ms:.1f} ms, stable {stable.p99_ms:.1f} ms "
                f"(x{ratio:.2f}, {delta:+.1f} ms)"
            )
            if ratio > t.max_p99_ratio and delta > t.max_p99_delta_ms:
                failed.append(
                    f"{p99_text}: above x{t.max_p99_ratio:g} and +{t.max_p99_delta_ms:g} ms"
                )
            else:
                passed.append(p99_text)

    if overlap is not None:
        overlap_text = f"top-{overlap.k} overlap {overlap.mean:.2f} over {overlap.queries} queries"
        if overlap.mean < t.min_overlap:
            failed.append(f"{overlap_text}: below {t.min_overlap:g}")
        else:
            passed.append(overlap_text)

    if failed:
        return Decision(ROLLBACK, tuple(failed + passed))
    if missing:
        return Decision(HOLD, tuple(missing + passed))
    return Decision(PROMOTE, tuple(passed))


def topk_overlap(stable_ids: list[int], canary_ids: list[int]) -> float:
    """Share of items the two top-k lists have in common (1.0 = the same items)."""
    size = max(len(stable_ids), len(canary_ids))
    if size == 0:
        return 1.0
    return len(set(stable_ids) & set(canary_ids)) / size


# -- Triton /metrics ------------------------------------------------------------


def parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for match in _LABEL.finditer(text):
        value = match.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        labels[match.group(1)] = value
    return labels


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise GateError(f"not a Prometheus sample line: {line!r}")
        samples.append((match["name"], parse_labels(match["labels"] or ""), float(match["value"])))
    return samples


def parse_matchers(text: str) -> dict[str, str]:
    """`a="x",b="y"` -> {"a": "x", "b": "y"} (equality matchers only)."""
    labels = parse_labels(text)
    if text.strip() and not labels:
        raise GateError(f'cannot read label matchers {text!r}; use name="value",...')
    return labels


@dataclass(frozen=True)
class Snapshot:
    """Counters and the latest p99 of one model at one moment."""

    success: float
    failure: float
    p99_us: float | None


def snapshot(samples: list[tuple[str, dict[str, str], float]], match: dict[str, str]) -> Snapshot:
    """Sum the request counters of the series whose labels include `match`."""

    def selected(labels: dict[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in match.items())

    success = sum(v for n, labels, v in samples if n == SUCCESS and selected(labels))
    failure = sum(v for n, labels, v in samples if n == FAILURE and selected(labels))
    quantiles = [
        v
        for n, labels, v in samples
        if n == SUMMARY and labels.get("quantile") == P99 and selected(labels) and not math.isnan(v)
    ]
    return Snapshot(success, failure, max(quantiles) if quantiles else None)


def window_stats(before: Snapshot, after: Snapshot) -> TrackStats:
    """Requests and failures between two snapshots; p99 from the later one."""
    failures = after.failure - before.failure
    requests = after.success - before.success + failures
    if requests < 0:
        raise GateError("counters went backwards: the server restarted during the window")
    p99 = after.p99_us / 1000 if after.p99_us is not None else None
    return TrackStats(requests=requests, failures=failures, p99_ms=p99)


def tls_context(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext | None:
    """How to check https:// servers (`ca`, default the system's CAs) and the client
    certificate to present (mutual TLS); None when no TLS file is given."""
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise GateError("--tls-cert and --tls-key go together")
    try:
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
        if cert is not None:
            context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as err:
        raise GateError(f"cannot load the TLS files: {err}") from err
    return context


def fetch_text(url: str, timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=tls) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError) as err:
        raise connection_error(url, err) from err


def connection_error(url: str, err: Exception) -> GateError:
    """What went wrong reaching `url`, naming the TLS options when the handshake failed."""
    cause = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(cause, ssl.SSLError):
        return GateError(
            f"TLS with {url} failed: {cause}; --tls-ca must name the CA that signed its "
            "certificate, and a listener that demands a client certificate needs "
            "--tls-cert and --tls-key"
        )
    return GateError(f"cannot read {url}: {err}")


def scrape_window(
    stable_url: str,
    canary_url: str,
    stable_match: dict[str, str],
    canary_match: dict[str, str],
    window_s: float,
    tls: ssl.SSLContext | None = None,
) -> tuple[TrackStats, TrackStats]:
    """Scrape both /metrics endpoints, wait `window_s`, scrape again."""
    before = [
        snapshot(parse_metrics(fetch_text(stable_url, tls=tls)), stable_match),
        snapshot(parse_metrics(fetch_text(canary_url, tls=tls)), canary_match),
    ]
    time.sleep(window_s)
    after = [
        snapshot(parse_metrics(fetch_text(stable_url, tls=tls)), stable_match),
        snapshot(parse_metrics(fetch_text(canary_url, tls=tls)), canary_match),
    ]
    return window_stats(before[0], after[0]), window_stats(before[1], after[1])


# -- Prometheus HTTP API --------------------------------------------------------


def selector(match: dict[str, str]) -> str:
    return ",".join(f'{key}="{value}"' for key, value in sorted(match.items()))


def prometheus_query(base_url: str, query: str, tls: ssl.SSLContext | None = None) -> float | None:
    """Value of an instant query returning at most one series; None when it returns none."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        body = json.loads(fetch_text(url, tls=tls))
    except ValueError as err:
        raise GateError(f"Prometheus answered {url} with something other than JSON") from err
    if body.get("status") != "success":
        raise GateError(f"Prometheus query {query!r} failed: {body.get('error', body)}")
    result = body["data"]["result"]
    if not result:
        return None
    if len(result) > 1:
        raise GateError(f"query {query!r} returned {len(result)} series; expected one")
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def prometheus_stats(
    base_url: str, match: dict[str, str], window_s: float, tls: ssl.SSLContext | None = None
) -> TrackStats:
    """Requests, failures and p99 of one track over the last `window_s` seconds."""
    sel = selector(match)
    window = f"{max(int(window_s), 1)}s"

    def query(text: str) -> float | None:
        return prometheus_query(base_url, text, tls)

    success = query(f"sum(increase({SUCCESS}{{{sel}}}[{window}]))") or 0.0
    failure = query(f"sum(increase({FAILURE}{{{sel}}}[{window}]))") or 0.0
    p99 = query(f'max({SUMMARY}{{{sel},quantile="{P99}"}})')
    return TrackStats(
        requests=success + failure,
        failures=failure,
        p99_ms=p99 / 1000 if p99 is not None else None,
    )


# -- top-k overlap ----------------------------------------------------------------


class SearchClient:
    """Sends `query` and `k` to a search-style model over Triton's HTTP/JSON API at `url`:
    host:port (plain HTTP) or an http:// or https:// URL."""

    def __init__(self, url: str, model: str, k: int, tls: ssl.SSLContext | None = None) -> None:
        root = url.rstrip("/") if "://" in url else f"http://{url}"
        self.base = f"{root}/v2/models/{model}"
        self.k = k
        self.tls = tls
        metadata = json.loads(fetch_text(self.base, tls=tls))
        config = json.loads(fetch_text(f"{self.base}/config", tls=tls))
        self.types = {tensor["name"]: tensor["datatype"] for tensor in metadata["inputs"]}
        for name in ("query", "k"):
            if name not in self.types:
                raise GateError(f"model {model} at {url} has no input {name!r}")
        self.shape = [1, 1] if config.get("max_batch_size", 0) > 0 else [1]

    def item_ids(self, query: str) -> list[int] | None:
        """The returned item ids, or None when the server answered with an error."""
        body = {
            "inputs": [
                {"name": "query", "datatype": "BYTES", "shape": self.shape, "data": [query]},
                {"name": "k", "datatype": self.types["k"], "shape": self.shape, "data": [self.k]},
            ],
            "outputs": [{"name": "item_ids"}],
        }
        request = urllib.request.Request(
            f"{self.base}/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.tls) as response:
                result = json.loads(response.read())
        except urllib.error.HTTPError:
            return None
        except (urllib.error.URLError, OSError) as err:
            raise connection_error(self.base, err) from err
        outputs = {output["name"]: output for output in result["outputs"]}
        return [int(item) for item in outputs["item_ids"]["data"]]


def measure_overlap(stable: SearchClient, canary: SearchClient, queries: list[str]) -> Overlap:
    """Mean top-k overlap over the queries stable answered; a canary error scores 0."""
    scores, failures = [], 0
    for query in queries:
        stable_ids = stable.item_ids(query)
        if stable_ids is None:
            continue
        canary_ids = canary.item_ids(query)
        failures += canary_ids is None
        scores.append(0.0 if canary_ids is None else topk_overlap(stable_ids, canary_ids))
    if not scores:
        raise GateError("stable answered none of the queries; cannot measure top-k overlap")
    mean = sum(scores) / len(scores)
    return Overlap(mean=mean, queries=len(scores), k=stable.k, canary_failures=failures)


# -- helm ---------------------------------------------------------------------------


def flatten(prefix: str, value) -> list[tuple[str, object]]:
    """{"a": {"b": 1}} -> [("a.b", 1)]; lists and scalars are leaves."""
    if isinstance(value, dict):
        items = []
        for key, child in value.items():
            items += flatten(f"{prefix}.{key}" if prefix else str(key), child)
        return items
    return [(prefix, value)]


def canary_settings(values: dict) -> list[tuple[str, object]]:
    """The stable values a promotion sets: the canary's image, repository overrides and args."""
    canary = values.get("canary") or {}
    image = canary.get("image") or {}
    settings: list[tuple[str, object]] = [
        (f"image.{key}", image[key]) for key in ("repository", "tag") if image.get(key)
    ]
    if image.get("tag"):
        settings.append(("image.digest", ""))
    settings += flatten("modelRepository", canary.get("modelRepository") or {})
    if canary.get("extraArgs"):
        settings.append(("extraArgs", canary["extraArgs"]))
    return settings


def next_weight(current: int, steps: list[int]) -> int | None:
    """The next canary weight after `current`, or None when the last step is reached."""
    later = [step for step in sorted(steps) if step > current]
    return later[0] if later else None


def helm_upgrade(
    decision: Decision,
    release: str,
    chart: str,
    namespace: str | None,
    values: dict,
    steps: list[int],
) -> str | None:
    """The `helm upgrade` that applies a decision; None for hold."""
    if decision.action == HOLD:
        return None
    sets: list[tuple[str, object]]
    if decision.action == ROLLBACK:
        sets = [("canary.enabled", False)]
    else:
        weight = next_weight(int((values.get("canary") or {}).get("weight", 0)), steps)
        if weight is not None:
            sets = [("canary.weight", weight)]
        else:
            sets = canary_settings(values) + [("canary.enabled", False)]
    argv = ["helm", "upgrade", release, chart]
    if namespace:
        argv += ["--namespace", namespace]
    argv.append("--reuse-values")
    for key, value in sets:
        argv += ["--set-json", f"{key}={json.dumps(value)}"]
    return " ".join(shlex.quote(arg) for arg in argv)


# -- command line ---------------------------------------------------------------------


def _load_values(path: Path) -> dict:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise GateError(f"cannot read values file {path}: {err}") from err
    if not isinstance(values, dict):
        raise GateError(f"values file {path} is not a mapping")
    return values


def _with_load(
    targets: list[tuple[str, str]],
    k: int,
    queries: list[str],
    stop: threading.Event,
    tls: ssl.SSLContext | None,
):
    """Background traffic to each (URL, model) (used with --load): the same queries, round
    robin."""

    def run(url: str, model: str) -> None:
        client = SearchClient(url, model, k, tls)
        index = 0
        while not stop.is_set():
            client.item_ids(queries[index % len(queries)])
            index += 1

    threads = [threading.Thread(target=run, args=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    return threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m k8s.canary_gate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model to compare, e.g. search")
    parser.add_argument(
        "--canary-model",
        help="the canary's model when it differs from --model: a release next to stable on "
        "one server, e.g. --model search_v1 --canary-model search_v2",
    )
    source = parser.add_argument_group("metrics source (one of)")
    source.add_argument("--stable-metrics", help="stable's Triton /metrics URL")
    source.add_argument("--canary-metrics", help="canary's Triton /metrics URL")
    source.add_argument("--prometheus", help="Prometheus base URL, e.g. http://prometheus:9090")
    parser.add_argument("--namespace", help="Kubernetes namespace (Prometheus matcher, helm)")
    parser.add_argument(
        "--stable-match",
        default=None,
        help='extra label matchers of stable series (default with --prometheus: track="stable")',
    )
    parser.add_argument(
        "--canary-match",
        default=None,
        help='extra label matchers of canary series (default with --prometheus: track="canary")',
    )
    parser.add_argument("--window", type=float, default=60.0, help="observation window, seconds")
    overlap = parser.add_argument_group("top-k overlap (optional)")
    overlap.add_argument(
        "--stable-infer", help="stable's HTTP endpoint: host:port, or an http(s):// URL"
    )
    overlap.add_argument(
        "--canary-infer", help="canary's HTTP endpoint: host:port, or an http(s):// URL"
    )
    overlap.add_argument("--queries", type=Path, help="file with one query per line")
    overlap.add_argument("--k", type=int, default=10, help="items requested per query")
    overlap.add_argument(
        "--load",
        action="store_true",
        help="also send the queries to both endpoints in a loop during the window",
    )
    limits = parser.add_argument_group("thresholds")
    defaults = Thresholds()
    limits.add_argument("--max-p99-ratio", type=float, default=defaults.max_p99_ratio)
    limits.add_argument("--max-p99-delta-ms", type=float, default=defaults.max_p99_delta_ms)
    limits.add_argument("--max-error-rate", type=float, default=defaults.max_error_rate)
    limits.add_argument("--max-error-rate-delta", type=float, default=defaults.max_error_rate_delta)
    limits.add_argument("--min-overlap", type=float, default=defaults.min_overlap)
    limits.add_argument("--min-requests", type=int, default=defaults.min_requests)
    helm = parser.add_argument_group("helm upgrade to print")
    helm.add_argument("--release", help="Helm release name")
    helm.add_argument("--chart", default="helm/triton-ecommerce", help="chart path or reference")
    helm.add_argument(
        "--values", type=Path, help="the release's values (helm get values RELEASE --all -o yaml)"
    )
    helm.add_argument(
        "--steps",
        default="25,50,100",
        help="canary weights to walk through before the final promotion (comma-separated)",
    )
    tls = parser.add_argument_group("TLS, for https:// URLs")
    tls.add_argument(
        "--tls-ca", type=Path, help="CA bundle the servers' certificates are checked against"
    )
    tls.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    tls.add_argument("--tls-key", type=Path, help="the client certificate's key")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Measure, decide and build the helm command; returns the result as a dict."""
    if args.prometheus:
        if args.stable_metrics or args.canary_metrics:
            raise GateError("use either --prometheus or --stable-metrics/--canary-metrics")
    elif not (args.stable_metrics and args.canary_metrics):
        raise GateError("give --prometheus, or both --stable-metrics and --canary-metrics")
    if bool(args.release) != bool(args.values):
        raise GateError("--release and --values go together")
    infer = [args.stable_infer, args.canary_infer, args.queries]
    if any(infer) and not all(infer):
        raise GateError("top-k overlap needs --stable-infer, --canary-infer and --queries")
    if args.load and not all(infer):
        raise GateError("--load needs --stable-infer, --canary-infer and --queries")

    default_track = args.prometheus is not None
    stable_match = parse_matchers(args.stable_match or ('track="stable"' if default_track else ""))
    canary_match = parse_matchers(args.canary_match or ('track="canary"' if default_track else ""))
    canary_model = args.canary_model or args.model
    stable_match["model"], canary_match["model"] = args.model, canary_model
    for match in (stable_match, canary_match):
        if args.prometheus and args.namespace:
            match["namespace"] = args.namespace

    queries: list[str] = []
    if args.queries:
        queries = [line.strip() for line in args.queries.read_text().splitlines() if line.strip()]
        if not queries:
            raise GateError(f"{args.queries} holds no queries")
    values = _load_values(args.values) if args.values else {}
    steps = [int(step) for step in args.steps.split(",") if step.strip()]
    tls = tls_context(args.tls_ca, args.tls_cert, args.tls_key)

    stop = threading.Event()
    threads = (
        _with_load(
            [(args.stable_infer, args.model), (args.canary_infer, canary_model)],
            args.k,
            queries,
            stop,
            tls,
        )
        if args.load
        else []
    )
    try:
        if args.prometheus:
            time.sleep(args.window if args.load else 0)
            stable = prometheus_stats(args.prometheus, stable_match, args.window, tls)
            canary = prometheus_stats(args.prometheus, canary_match, args.window, tls)
        else:
            stable, canary = scrape_window(
                args.stable_metrics,
                args.canary_metrics,
                stable_match,
                canary_match,
                args.window,
                tls,
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    overlap = None
    if queries:
        overlap = measure_overlap(
            SearchClient(args.stable_infer, args.model, args.k, tls),
            SearchClient(args.canary_infer, canary_model, args.k, tls),
            queries,
        )
    thresholds = Thresholds(
        max_p99_ratio=args.max_p99_ratio,
        max_p99_delta_ms=args.max_p99_delta_ms,
        max_error_rate=args.max_error_rate,
        max_error_rate_delta=args.max_error_rate_delta,
        min_overlap=args.min_overlap,
        min_requests=args.min_requests,
    )
    decision = decide(stable, canary, thresholds, overlap)
    command = (
        helm_upgrade(decision, args.release, args.chart, args.namespace, values, steps)
        if args.release
        else None
    )
    return {
        "decision": decision.action,
        "reasons": list(decision.reasons),
        "stable": stable.__dict__,
        "canary": canary.__dict__,
        "overlap": overlap.__dict__ if overlap else None,
        "helm": command,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except GateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"decision: {result['decision']}")
        for reason in result["reasons"]:
            print(f"  - {reason}")
        if result["helm"]:
            print(result["helm"])
        elif result["decision"] == HOLD:
            print("no change: run the gate again when more traffic has been served")
    return EXIT_CODES[result["decision"]]


if __name__ == "__main__":
    sys.exit(main())
