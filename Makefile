# The two commands of the README: `make up` (set up everything, run the demo) and
# `make test` (quality gates and the whole test suite). Everything else is a step.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup binaries up status down lint test bench chart

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

binaries: setup
	$(BIN)/vk-fargate dev build

up: binaries
	bash hack/install-system-packages.sh
	$(BIN)/vk-fargate dev up
	$(BIN)/vk-fargate dev demo

status: setup
	$(BIN)/vk-fargate dev status

down: setup
	$(BIN)/vk-fargate dev down

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

bench: binaries
	$(BIN)/python benchmarks/cluster_start.py

# The shipping files: hadolint, helm lint, and a server-side dry run when $KUBECONFIG is set.
chart: setup
	bash hack/check-chart.sh
