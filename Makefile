# Two commands matter: `make demo` runs the whole pipeline locally, `make test` runs every
# test. Each installs what it needs (uv, the app's locked env, the lint tools' env).

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell command -v $(PYTHON))

UV := $(PYTHON) -m uv
# bench/ builds a Lambda-like virtualenv with it (bench/measure.py)
export UV
LAYER_REQUIREMENTS ?= layers/pipeline/requirements.txt
VENV := .venv
TOOLS := .venv-tools
CHECKOV := .venv-checkov
RUN := $(VENV)/bin/python
# make test: the local-stack suites on one worker, the in-process tests on the other (tests/conftest.py)
TEST_WORKERS ?= 2

.PHONY: demo stack test unit integration template check lint typecheck format layer-requirements build clean uv bench chaos

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | uv
	$(UV) sync --frozen --quiet
	touch $@

$(TOOLS)/.synced: tools/requirements-tools.txt | uv
	$(UV) venv --quiet --allow-existing $(TOOLS)
	$(UV) pip sync --quiet --python $(TOOLS)/bin/python tools/requirements-tools.txt
	touch $@

# checkov pins conflict with the app's and with cfn-lint's: a venv of its own.
$(CHECKOV)/.synced: tools/requirements-checkov.txt | uv
	$(UV) venv --quiet --allow-existing $(CHECKOV)
	$(UV) pip sync --quiet --require-hashes --python $(CHECKOV)/bin/python tools/requirements-checkov.txt
	touch $@

## demo: run the pipeline on this machine (moto + simulator); IMAGE=path PROMPT="..." PROVIDER=route optional
demo: $(VENV)/.synced
	$(RUN) -m local.demo $(if $(IMAGE),--image "$(IMAGE)") $(if $(PROMPT),--prompt "$(PROMPT)") \
		$(if $(PROVIDER),--provider "$(PROVIDER)")

## stack: run the local stack until Ctrl-C, for `i2v --local ...` (writes out/local-stack.json); ROUTES=a,b optional
stack: $(VENV)/.synced
	$(RUN) -m local.stack_main $(if $(ROUTES),--routes "$(ROUTES)")

## test: lint, type-check, then unit, template and integration tests
test: $(VENV)/.synced $(TOOLS)/.synced $(CHECKOV)/.synced check
	$(RUN) -m pytest -n $(TEST_WORKERS) --dist loadgroup

unit: $(VENV)/.synced
	$(RUN) -m pytest tests/unit

integration: $(VENV)/.synced
	$(RUN) -m pytest tests/integration

template: $(VENV)/.synced $(TOOLS)/.synced $(CHECKOV)/.synced
	$(RUN) -m pytest tests/template

check: lint typecheck

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy

format: $(VENV)/.synced
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## bench: every benchmark section into reports/bench.json + reports/bench.md (QUICK=1, SECTIONS=a,b)
bench: $(VENV)/.synced | uv
	$(RUN) bench/run.py $(if $(QUICK),--quick) $(if $(SECTIONS),--sections $(SECTIONS))

## chaos: 300 uploads over every route with seeded faults into reports/chaos.{json,md,png} (UPLOADS=n SEED=n)
chaos: $(VENV)/.synced
	$(RUN) -m local.chaos $(if $(UPLOADS),--uploads $(UPLOADS)) $(if $(SEED),--seed $(SEED))

## layer-requirements: regenerate the layer's requirements from uv.lock (never edit by hand)
layer-requirements: | uv
	$(UV) export --frozen --quiet --no-dev --no-default-groups --no-hashes --no-emit-project \
		--output-file $(LAYER_REQUIREMENTS)

## build: sam build, after checking that sam and a python3.13 are on PATH (CONTAINER=1: sam build --use-container, needs Docker)
build:
	@bash tools/check_build.sh $(if $(CONTAINER),--use-container)
	sam build $(if $(CONTAINER),--use-container)

clean:
	rm -rf $(VENV) $(TOOLS) $(CHECKOV) .aws-sam .pytest_cache .mypy_cache .ruff_cache out
