"""Fixtures for the chart, k8s/ and canary-gate tests.

Rendering uses the real helm binary (`python -m k8s.tools` fetches it), custom
resources are checked with validators compiled from the published CRD schemas
(npm packages installed by the same command), and the real-server tests run the
local tritonserver 2.51 on a tiny Python-backend `search` model with the search
pipeline's contract, `builders.names.SEARCH_INPUTS` and `PIPELINE_OUTPUTS` (query BYTES,
optional user_id INT64, k INT32 -> item_ids INT64, scores FP32, truncated BOOL).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from builders import names
from builders.repository import write_warmup_files
from builders.specs import ModelSpec
from k8s import tools

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "triton-ecommerce"
SCENARIOS = sorted(
    p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")
)
RELEASE, NAMESPACE = "rel", "shop"

SEARCH_MODEL_PY = textwrap.dedent(
    '''
    """Tiny stand-in for the search pipeline: deterministic item ids per query."""

    import json
    import time
    import zlib

    import numpy as np
    import triton_python_backend_utils as pb_utils

    WARMUP_QUERY = {warmup_query!r}.encode()


    class TritonPythonModel:
        def initialize(self, args):
            params = json.loads(args["model_config"]).get("parameters", {})

            def param(key, default):
                return params.get(key, {}).get("string_value", default)

            self.delay = float(param("delay_ms", "0")) / 1000
            self.fail = param("fail", "false") == "true"
            self.salt = param("salt", "").encode()

        def execute(self, requests):
            queries = [
                pb_utils.get_input_tensor_by_name(r, "query").as_numpy().ravel()[0]
                for r in requests
            ]
            if self.fail and queries != [WARMUP_QUERY] * len(requests):  # it still loads
                # Raised, not returned: Triton 2.51 counts only raised errors as failures.
                raise pb_utils.TritonModelException("this search model is set to fail")
            responses = []
            for request in requests:
                if self.delay:
                    time.sleep(self.delay)
                queries = pb_utils.get_input_tensor_by_name(request, "query").as_numpy()
                k = int(pb_utils.get_input_tensor_by_name(request, "k").as_numpy().reshape(-1)[0])
                ids, scores = [], []
                for query in queries.reshape(-1):
                    rng = np.random.default_rng(zlib.crc32(query + self.salt))
                    ids.append(rng.choice(1000, size=k, replace=False))
                    scores.append(np.sort(rng.random(k))[::-1])
                responses.append(
                    pb_utils.InferenceResponse(
                        [
                            pb_utils.Tensor("item_ids", np.array(ids, dtype=np.int64)),
                            pb_utils.Tensor("scores", np.array(scores, dtype=np.float32)),
                            pb_utils.Tensor("truncated", np.zeros((len(ids), 1), dtype=np.bool_)),
                        ]
                    )
                )
            return responses
    '''
).replace("{warmup_query!r}", repr(names.WARMUP_QUERY))  # it answers Triton's warm-up


def search_spec(delay_ms: int = 0, fail: bool = False, salt: str = "") -> ModelSpec:
    """The stand-in's spec: the search pipeline's tensors, no dynamic batching."""
    return ModelSpec(
        name=names.SEARCH,
        backend="python",
        inputs=names.SEARCH_INPUTS,
        outputs=names.PIPELINE_OUTPUTS,
        max_batch_size=names.PIPELINE_MAX_BATCH,
        parameters={"delay_ms": str(delay_ms), "fail": str(fail).lower(), "salt": salt},
    )


def write_search_model(repo: Path, delay_ms: int = 0, fail: bool = False, salt: str = "") -> Path:
    """Write the tiny `search` model into `repo`; returns `repo`."""
    model = repo / "search"
    (model / "1").mkdir(parents=True, exist_ok=True)
    spec = search_spec(delay_ms, fail, salt)
    (model / "config.pbtxt").write_text(spec.to_pbtxt())
    write_warmup_files(model, spec)
    (model / "1" / "model.py").write_text(SEARCH_MODEL_PY)
    return repo


@pytest.fixture(scope="session")
def search_model() -> Callable[..., Path]:
    return write_search_model


@pytest.fixture(scope="session")
def helm() -> Path:
    path = tools.helm_path()
    if path is None:
        pytest.fail("helm not found on PATH or in build/tools: run `make helm-tools`")
    return path


@pytest.fixture(scope="session")
def run_helm(helm: Path) -> Callable[..., subprocess.CompletedProcess]:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)

    return run


def values_args(scenario: str | None, sets: tuple[str, ...]) -> list[str]:
    args = ["-f", str(CHART / "ci" / f"{scenario}-values.yaml")] if scenario else []
    for item in sets:
        args += ["--set-json", item]
    return args


@pytest.fixture(scope="session")
def render(run_helm) -> Callable[..., list[dict]]:
    """render(scenario or None, *set_json) -> the manifests `helm template` produces."""
    cache: dict[tuple, list[dict]] = {}

    def _render(scenario: str | None = None, *sets: str) -> list[dict]:
        key = (scenario, sets)
        if key not in cache:
            result = run_helm(
                "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                *values_args(scenario, sets),
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def render_error(run_helm) -> Callable[..., str]:
    """render_error(scenario or None, *set_json) -> helm's error output (the render must fail)."""

    def _render_error(scenario: str | None = None, *sets: str) -> str:
        result = run_helm("template", RELEASE, str(CHART), *values_args(scenario, sets))
        assert result.returncode != 0, "the chart rendered values it should reject"
        return result.stderr

    return _render_error


@pytest.fixture(scope="session")
def validate_custom_resources() -> Callable[[list[dict]], list[dict]]:
    """Validate custom resources against their published CRD schemas (node + npm validators)."""
    folder = tools.crd_validators_dir()
    node = shutil.which("node")
    if node is None or not (folder / "node_modules").is_dir():
        pytest.fail("custom-resource validators missing: run `make helm-tools` (needs node)")

    def _validate(docs: list[dict]) -> list[dict]:
        result = subprocess.run(
            [node, str(folder / "validate.mjs")],
            input=json.dumps(docs),
            capture_output=True,
            text=True,
            cwd=folder,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return _validate


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


@pytest.fixture(scope="session")
def select() -> Callable[..., list[dict]]:
    """select(docs, kind, name=None) -> the manifests of that kind (and name)."""
    return find


KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`scenario` runs a test for every ci/*-values.yaml; `kube_version` for 1.29 and 1.33."""
    if "scenario" in metafunc.fixturenames:
        metafunc.parametrize("scenario", SCENARIOS)
    if "kube_version" in metafunc.fixturenames:
        metafunc.parametrize("kube_version", KUBERNETES_VERSIONS)


@pytest.fixture(scope="session")
def chart() -> Path:
    return CHART
