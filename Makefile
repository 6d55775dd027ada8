# vmshield: `make run` runs the main job, `make test` passes the tests. Both install what they need.
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: bootstrap run test lint typecheck fuzz bench bench-file bench-nids bench-inline bench-events bench-onaccess clean

bootstrap:
	@scripts/bootstrap

run: bootstrap
	@scripts/run

# Lint and types first (seconds), then every test.
test: bootstrap
	$(VENV)/ruff check src tests bench
	$(VENV)/ruff format --check src tests bench
	$(VENV)/mypy
	$(VENV)/pytest $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/ruff check src tests bench
	$(VENV)/ruff format --check src tests bench

typecheck: bootstrap
	$(VENV)/mypy

# Each fuzz target runs for FUZZ_SECONDS (outside CI).
FUZZ_SECONDS ?= 60
fuzz: bootstrap
	$(VENV)/python -m tests.fuzz.run_all --seconds $(FUZZ_SECONDS)

bench-file: bootstrap
	$(VENV)/python bench/file_scan.py
bench-nids: bootstrap
	$(VENV)/python bench/nids.py
bench-inline: bootstrap
	$(VENV)/python bench/inline.py
bench-events: bootstrap
	$(VENV)/python bench/events.py
bench-onaccess: bootstrap
	$(VENV)/python bench/onaccess.py
bench: bench-file bench-nids bench-inline bench-events bench-onaccess

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
