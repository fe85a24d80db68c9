"""Run a sweep against a live Triton in explicit model-control mode, no restarts.

Each config is applied by re-loading the tuned models with a config override
(Triton's repository API); the original `config.pbtxt` of every model touched
is loaded back at the end, also on Ctrl-C, SIGTERM or an error. Each config is
measured at rising load levels with perf_analyzer; in smart mode the ramp stops
at the first level whose p99 breaks the SLO (the levels above only get worse).
"""

from __future__ import annotations

import copy
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tritonclient.http as httpclient

from perf import inputs
from perf.tuning import analyzer, search
from perf.tuning.spec import SweepSpec, model_config

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Progress:
    done: int
    total: int
    elapsed_s: float
    label: str

    @property
    def eta_s(self) -> float:
        if self.done == 0:
            return float("nan")
        return self.elapsed_s / self.done * max(self.total - self.done, 0)


def progress_bar(progress: Progress, width: int = 28) -> None:
    """Print a one-line progress bar with an ETA on stderr."""
    filled = int(width * progress.done / max(progress.total, 1))
    eta = (
        "?"
        if progress.eta_s != progress.eta_s
        else f"{progress.eta_s / 60:.0f}m{progress.eta_s % 60:02.0f}s"
    )
    line = (
        f"\r[{'#' * filled}{'.' * (width - filled)}] {progress.done}/{progress.total} "
        f"measurements, ETA {eta}  {progress.label[:60]:<60}"
    )
    print(line, end="", file=sys.stderr, flush=True)


@dataclass
class Trial:
    """One config and what it measured at each load level."""

    index: int
    config: dict
    measurements: list[analyzer.Measurement] = field(default_factory=list)
    error: str | None = None

    def feasible(self, slo_ms: float) -> list[analyzer.Measurement]:
        return [m for m in self.measurements if m.p99_ms <= slo_ms]

    def score(self, slo_ms: float) -> tuple[int, float]:
        ok = self.feasible(slo_ms)
        if ok:
            return 1, max(m.throughput for m in ok)
        if self.measurements:
            return 0, -min(m.p99_ms for m in self.measurements)
        return -1, 0.0

    def best(self, slo_ms: float) -> analyzer.Measurement | None:
        """The highest-throughput point within the SLO, else the lowest-p99 point."""
        ok = self.feasible(slo_ms)
        if ok:
            return max(ok, key=lambda m: m.throughput)
        return min(self.measurements, key=lambda m: m.p99_us, default=None)


#: The point that changes nothing: the configs as they were before the sweep.
ORIGINAL: dict = {}


def confirmed(rounds: list[tuple[tuple[int, float], tuple[int, float]]]) -> bool:
    """Whether the winner beat the original configs in every confirmation round, each
    round its (original score, winner score) (`Trial.score`)."""
    return bool(rounds) and all(winner > original for original, winner in rounds)


@dataclass
class SweepResult:
    spec: SweepSpec
    trials: list[Trial]
    best: Trial
    originals: dict[str, dict]
    wall_s: float
    #: Per confirmation round, (original, winner) throughput at the SLO (0 where
    #: infeasible) and whether the winner was kept; None when no round ran.
    confirmation: dict | None = None

    @property
    def feasible(self) -> bool:
        return self.best.score(self.spec.slo_p99_ms)[0] == 1

    @property
    def measurement_count(self) -> int:
        return sum(len(t.measurements) for t in self.trials)

    def chosen_configs(self) -> dict[str, dict]:
        return configs_for(self.best.config, self.originals)


#: Tunables of a dynamic batcher's `default_queue_policy` (the bounded queue).
QUEUE_POLICY_TUNABLES = ("max_queue_size", "default_timeout_microseconds")
#: What a model with an unbounded queue gets before a queue tunable is set on it.
NEW_QUEUE_POLICY = {"timeout_action": "REJECT", "allow_timeout_override": True}


def apply_tunables(config: dict, tunables: dict[str, object]) -> dict:
    """A copy of a model-config dict with the tunables set."""
    config = copy.deepcopy(config)
    batching = config.setdefault("dynamic_batching", {})
    for name, value in tunables.items():
        if name == "max_batch_size":
            config["max_batch_size"] = value
        elif name == "preferred_batch_size":
            if value:
                batching["preferred_batch_size"] = list(value)
            else:
                batching.pop("preferred_batch_size", None)
        elif name == "max_queue_delay_microseconds":
            batching["max_queue_delay_microseconds"] = value
        elif name in QUEUE_POLICY_TUNABLES:
            policy = batching.setdefault("default_queue_policy", dict(NEW_QUEUE_POLICY))
            policy[name] = value
        elif name == "instance_count":
            groups = config.get("instance_group") or [{"kind": "KIND_CPU"}]
            config["instance_group"] = [{**groups[0], "count": value}]
        else:
            config.setdefault("parameters", {})[name] = {"string_value": str(value)}
    return config


def configs_for(point: dict, originals: dict[str, dict]) -> dict[str, dict]:
    """The full model configs of a sweep point (`model.tunable -> value`)."""
    per_model: dict[str, dict] = {}
    for dimension, value in point.items():
        model, tunable = dimension.split(".", 1)
        per_model.setdefault(model, {})[tunable] = value
    return {model: apply_tunables(originals[model], t) for model, t in per_model.items()}


def valid_point(point: dict, originals: dict[str, dict], pipeline: str | None) -> bool:
    """Preferred batch sizes fit max_batch_size; stages accept the pipeline's batch."""
    configs = {**originals, **configs_for(point, originals)}
    for config in configs.values():
        preferred = config.get("dynamic_batching", {}).get("preferred_batch_size", [])
        if any(size > config.get("max_batch_size", 0) for size in preferred):
            return False
    if pipeline:
        sent = configs[pipeline].get("max_batch_size", 0)
        if any(c.get("max_batch_size", 0) < sent for m, c in configs.items() if m != pipeline):
            return False
    return True


def start_point(spec: SweepSpec, originals: dict[str, dict]) -> dict:
    """The original value of each dimension where the space holds it, else its first value."""
    point = {}
    for dimension, values in spec.dimensions.items():
        model, tunable = dimension.split(".", 1)
        current = configs_current_value(originals[model], tunable)
        point[dimension] = current if current in values else values[0]
    return point


def configs_current_value(config: dict, tunable: str) -> object:
    batching = config.get("dynamic_batching", {})
    if tunable == "max_batch_size":
        return config.get("max_batch_size", 0)
    if tunable == "preferred_batch_size":
        return list(batching.get("preferred_batch_size", []))
    if tunable == "max_queue_delay_microseconds":
        return int(batching.get("max_queue_delay_microseconds", 0))
    if tunable in QUEUE_POLICY_TUNABLES:  # 0: unbounded, Triton's default
        return int(batching.get("default_queue_policy", {}).get(tunable, 0))
    if tunable == "instance_count":
        return (config.get("instance_group") or [{}])[0].get("count", 1)
    value = config.get("parameters", {}).get(tunable, {}).get("string_value")
    if tunable == "length_buckets":
        return value
    return int(value) if value is not None and value.isdigit() else value


class RemoteServer:
    """A running Triton (explicit model control) reached by its HTTP address."""

    def __init__(self, http_url: str) -> None:
        self.http_url = http_url
        self._client = httpclient.InferenceServerClient(http_url)

    def load_model(self, name: str, config: dict | None = None) -> None:
        self._client.load_model(name, config=None if config is None else json.dumps(config))


@contextmanager
def signals_raise_interrupt():
    """SIGTERM raises KeyboardInterrupt like SIGINT, so `finally` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_blocked():
    """Hold SIGINT and SIGTERM (delivered afterwards) while the originals are restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def restore(server, originals: dict[str, dict]) -> list[str]:
    """Load each model's original config back; return the errors (empty when all loaded).

    The config is passed explicitly: a plain re-load of a model whose files did not
    change keeps the override that is live.
    """
    errors = []
    for model, config in originals.items():
        try:
            server.load_model(model, config=config)
        except Exception as err:  # noqa: BLE001 - report every model that failed, then go on
            errors.append(f"{model}: {err}")
    return errors


class Sweep:
    """One sweep of `spec` against `server` (an object with `http_url` and `load_model`)."""

    def __init__(
        self,
        spec: SweepSpec,
        server,
        work_dir: Path,
        progress: Callable[[Progress], None] | None = progress_bar,
    ) -> None:
        self.spec = spec
        self.server = server
        self.work_dir = Path(work_dir)
        self.progress = progress
        self.originals = {m: model_config(spec.repository, m) for m in spec.space}
        self.pipeline = spec.model if spec.composing_models else None
        if self.pipeline and self.pipeline not in self.originals:
            self.originals[self.pipeline] = model_config(spec.repository, self.pipeline)
        self.trials: list[Trial] = []
        self.applied: dict[str, str] = {}
        self.done = 0
        self.started = 0.0
        self.input_data: Path | None = None

    # -- planning ----------------------------------------------------------
    def estimated_measurements(self) -> int:
        dims = self.spec.dimensions
        valid = list(search.grid(dims, self._valid))
        if self.spec.search == "brute":
            configs = len(valid)
        else:
            configs = min(len(valid), 1 + sum(len(v) - 1 for v in dims.values()))
        return max(configs, 1) * len(self.spec.loads)

    def _valid(self, point: dict) -> bool:
        return valid_point(point, self.originals, self.pipeline)

    # -- measuring ---------------------------------------------------------
    def _apply(self, point: dict) -> None:
        """Load `point`'s configs; every other model changed so far gets its original back
        (so the empty point, `ORIGINAL`, is the configs as they were)."""
        configs = {m: self.originals[m] for m in self.applied}
        configs.update(configs_for(point, self.originals))
        for model, config in configs.items():
            text = json.dumps(config, sort_keys=True)
            if self.applied.get(model) != text:
                self.applied[model] = text  # marked first: a failed load is restored too
                self.server.load_model(model, config=config)

    def _analyzer_spec(self, load: float) -> analyzer.AnalyzerSpec:
        m = self.spec.measurement
        return analyzer.AnalyzerSpec(
            model=self.spec.model,
            url=self.server.http_url,
            load=load,
            load_mode=self.spec.load_mode,
            input_data=self.input_data,
            composing_models=self.spec.composing_models,
            measurement_interval_ms=m.interval_ms,
            stability_percentage=m.stability_percentage,
            max_trials=m.max_trials,
            shapes=self.spec.shapes,
        )

    def _report(self, label: str) -> None:
        if self.progress is not None:
            total = max(self.total, self.done)
            self.progress(Progress(self.done, total, time.monotonic() - self.started, label))

    def evaluate(self, point: dict) -> tuple[int, float]:
        trial = Trial(len(self.trials), point)
        self.trials.append(trial)
        slo = self.spec.slo_p99_ms
        try:
            self._apply(point)
        except Exception as err:  # noqa: BLE001 - a config Triton refuses is a failed trial
            trial.error = f"load failed: {err}"
            return trial.score(slo)
        for load in self.spec.loads:
            label = f"trial {trial.index} {self.spec.load_mode}={load:g}"
            try:
                measurement = analyzer.run(self._analyzer_spec(load))
            except analyzer.AnalyzerError as err:
                trial.error = str(err)
                self.done += 1
                self._report(label + " failed")
                break
            trial.measurements.append(measurement)
            self.done += 1
            self._report(f"{label}: {measurement.throughput:.0f}/s p99 {measurement.p99_ms:.0f} ms")
            if self.spec.search == "smart" and measurement.p99_ms > slo:
                break
        if self.total <= self.done:
            self.total = self.done + len(self.spec.loads)
        return trial.score(slo)

    def run(self) -> SweepResult:
        """Search the space; restore every tuned model's original config at the end."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.input_samples:
            dataset = inputs.dataset_of(self.spec.repository, self.spec.model)
            document = inputs.input_data(
                self.spec.model,
                dataset,
                self.spec.repository,
                self.spec.input_samples,
                self.spec.input_seed,
            )
            self.input_data = inputs.write_input_data(self.work_dir / "input_data.json", document)
        self.total = self.estimated_measurements()
        self.started = time.monotonic()
        dims = self.spec.dimensions
        slo = self.spec.slo_p99_ms
        try:
            with signals_raise_interrupt():
                if self.spec.search == "brute":
                    search.brute(dims, self.evaluate, self._valid)
                else:
                    start = start_point(self.spec, self.originals)
                    search.coordinate_descent(
                        dims, start, self.evaluate, self._valid, self.spec.max_passes
                    )
                best = max(self.trials, key=lambda t: t.score(slo))
                confirmation = None
                if self.spec.confirm_rounds and not self._is_original(best.config):
                    best, confirmation = self._confirm(best)
        finally:
            if self.progress is not None:
                print(file=sys.stderr)
            with signals_blocked():
                errors = restore(self.server, {m: self.originals[m] for m in self.applied})
            if errors:
                print("could not restore: " + "; ".join(errors), file=sys.stderr)
        return SweepResult(
            self.spec,
            self.trials,
            best,
            self.originals,
            time.monotonic() - self.started,
            confirmation,
        )

    def _is_original(self, point: dict) -> bool:
        """Whether every tunable of `point` has the value the original configs hold."""
        return all(
            configs_current_value(self.originals[model], tunable) == value
            for model, tunable, value in (
                (*dimension.split(".", 1), value) for dimension, value in point.items()
            )
        )

    def _confirm(self, winner: Trial) -> tuple[Trial, dict]:
        """Re-measure the original configs and the winner in turn; keep the winner only if
        it wins every round, else the original configs (their last measurement)."""
        self.total = self.done + 2 * self.spec.confirm_rounds * len(self.spec.loads)
        rounds = []
        for _ in range(self.spec.confirm_rounds):
            original_score = self.evaluate(ORIGINAL)
            original_trial = self.trials[-1]
            rounds.append((original_score, self.evaluate(winner.config)))
        kept = confirmed(rounds)
        throughput = [[score[1] if score[0] == 1 else 0.0 for score in pair] for pair in rounds]
        return (winner if kept else original_trial), {
            "winner": winner.index,
            "rounds": throughput,
            "kept": kept,
        }
