# The two commands of the README's quick start: `make demo` and `make test`.
# Each creates the virtual environment and installs what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint format bench clean

$(BIN)/cxm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(BIN)/cxm

$(VENV)/.test-deps: $(BIN)/cxm
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/cxm
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: $(VENV)/.test-deps
	bash scripts/system-deps.sh
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/pytest

format: $(VENV)/.test-deps
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.test-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" bash benchmarks/run-all.sh

clean:
	rm -rf $(VENV) demo-workspace .pytest_cache .ruff_cache
