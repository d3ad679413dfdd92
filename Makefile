# One-word developer tasks. `make test` is what CI runs (see .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint format bench bench-rules run clean

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install -q -e '.[test]'

test: install
	$(VENV)/bin/pytest

lint:
	$(VENV)/bin/ruff check scraper tests bench
	$(VENV)/bin/ruff format --check scraper tests bench

format:
	$(VENV)/bin/ruff format scraper tests bench
	$(VENV)/bin/ruff check --fix scraper tests bench

bench:
	$(PY) bench/bench_pipeline.py

bench-rules:
	$(PY) bench/bench_rules.py

run:
	$(VENV)/bin/scraper run --once

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
