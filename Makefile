# One-word developer tasks. `make test` is what CI runs (see .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint typecheck format bench bench-rules bench-schedule bench-stories run clean

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

bench-schedule:
	$(PY) bench/bench_schedule.py

bench-stories:
	$(PY) bench/bench_stories.py

typecheck:
	$(VENV)/bin/mypy scraper

run:
	$(VENV)/bin/scraper run --once

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
