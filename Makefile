# Everything a newcomer needs: `make run` and `make test`. The virtualenv installs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# protoc finds the mypy-protobuf plugins on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install proto run test lint clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) proto

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

run: install
	$(BIN)/python -m profile_service.dev.run

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy profile_service

clean:
	rm -rf $(VENV) profile_service/_proto build *.egg-info .pytest_cache .mypy_cache .ruff_cache
