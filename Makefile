# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both create .venv and install what is missing; a stamp keeps reruns fast.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: run test lint typecheck pytest synth deploy bench layer clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[infra,dev]'
	touch $(STAMP)

node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch $@

run: $(STAMP)
	$(BIN)/sotto local up $(if $(PORT),--port $(PORT)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(FRESH),--fresh) $(if $(VERBOSE),--verbose)

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# STAGE=prod picks the stage (cdk.json holds the other context defaults).
synth: $(STAMP) node_modules/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" npx cdk synth --quiet $(if $(STAGE),-c stage=$(STAGE))

deploy: $(STAMP) node_modules/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" npx cdk deploy $(if $(STAGE),-c stage=$(STAGE))

layer: $(STAMP)
	$(BIN)/python -m infra.packaging

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) cdk.out build node_modules .mypy_cache .pytest_cache .ruff_cache .hypothesis
