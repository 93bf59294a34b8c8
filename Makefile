# The two entry points: `make demo` and `make test`. Both build .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: demo test lint install clean soak screenshots

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

# The model-based rules test with thousands of examples (minutes; not part of `make test`),
# e.g. make soak SOAK_ARGS="--examples 500 --skip stage_equals_reference".
soak: $(STAMP)
	$(PY) bench/soak_rules.py $(SOAK_ARGS)

demo: $(STAMP)
	$(PY) manage.py demo

# The README's pictures, taken from a throwaway demo in Debian's Chromium (docs/screenshots.py).
screenshots: $(STAMP)
	$(PY) docs/screenshots.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
