# The two entry points: `make demo` and `make test`. Both build .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: demo test lint install clean soak screenshots bench

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when a requirements file changed since the last install.
$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

# Ten times what `make test` runs, by hand (tens of minutes): the model-based rules test with
# thousands of examples (e.g. SOAK_ARGS="--examples 500 --skip stage_equals_reference"), then
# the fault matrix with 2,000 sequences on seeds CI does not draw (SOAK_FAULT_SEQUENCES=N).
SOAK_FAULT_SEQUENCES ?= 2000
soak: $(STAMP)
	$(PY) bench/soak_rules.py $(SOAK_ARGS)
	STAGEMAP_FAULT_SEQUENCES=$(SOAK_FAULT_SEQUENCES) STAGEMAP_FAULT_FIRST_SEED=200 \
		$(PY) -m pytest tests/sync/test_fault_matrix.py::test_sync_converges_after_faults

# Every benchmark as one markdown table on SQLite and PostgreSQL, written to bench/RESULTS.md
# (about 10 minutes; PostgreSQL skipped when not reachable), e.g. make bench BENCH_ARGS=--quick.
bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)

demo: $(STAMP)
	$(PY) manage.py demo

# The README's pictures, taken from a throwaway demo in Debian's Chromium (docs/screenshots.py).
screenshots: $(STAMP)
	$(PY) docs/screenshots.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
