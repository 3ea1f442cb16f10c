# Everything a newcomer needs: `make run` and `make test`. The virtualenv installs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# protoc finds the mypy-protobuf plugins on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

# buf (the protobuf linter and compatibility checker) comes from PyPI (buf-bin, pinned in
# pyproject.toml's dev extra): make test needs Python and nothing else.
BUF := $(BIN)/buf

.PHONY: install proto run test lint bench bench-attacks bench-scale clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,tracing,dev]'
	touch $(STAMP)

install: $(STAMP) proto

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

run: install
	$(BIN)/python -m devtools.run

# The suite, then its core again with every server behind a real PgBouncer in transaction
# mode (skipped, saying so, where pgbouncer is not installed; CI installs it).
PGBOUNCER_SUITE := tests/e2e/test_smoke.py tests/e2e/test_profile_rpcs.py tests/e2e/test_isolation.py \
	tests/e2e/test_etags.py tests/e2e/test_undelete.py tests/e2e/test_batch_get.py \
	tests/e2e/test_purge.py tests/e2e/test_validation.py tests/e2e/test_error_details.py \
	tests/e2e/test_faults.py tests/e2e/test_fail_fast.py tests/e2e/test_encryption.py \
	tests/integration/test_round_trips.py tests/integration/test_rls_matrix.py

test: install
	$(BIN)/pytest $(PYTEST_ARGS)
	PROFILE_TEST_VIA_PGBOUNCER=1 $(BIN)/pytest -p no:cacheprovider $(PGBOUNCER_SUITE)

lint: install
	$(BUF) lint
	$(BIN)/hadolint --failure-threshold style Dockerfile
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy profile_service devtools bench

# Seeds a database, measures bare gRPC servers (the ceiling) and the real service; see bench/.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# The unauthenticated HTTP/2 attacks against one worker, a legitimate client beside them; see
# bench/README.md ("Transport hardening").
bench-attacks: install
	$(BIN)/python -m bench.attacks $(BENCH_ARGS)

# The service at 10 million profiles, a purge of a tenth of them under load, and two soaks
# (bench/README.md, "Scale"); SCALE_ROWS=1000000 for a quicker look.
bench-scale: install
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) profile_service/v1 build *.egg-info .pytest_cache .mypy_cache .ruff_cache
