# The two commands of the README: `make up` (set up everything, run the demo) and
# `make test` (quality gates and the whole test suite). Everything else is a step.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup lock binaries up status down lint test bench chart

setup: $(VENV)/.installed

# The runtime dependencies at exactly the versions (and hashes) the image ships, then
# the package and its development tools.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Re-pin the runtime dependencies after changing them in pyproject.toml.
lock: setup
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file=requirements.lock pyproject.toml

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
