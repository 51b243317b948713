# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The stamp is rebuilt when the dependency list or the pins change.
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check label_assistant tests benchmarks

test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow and not labelstudio"

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m label_assistant.demo

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_rle.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
