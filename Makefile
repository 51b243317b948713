# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The stamp is rebuilt when the dependency list or the pins change.
STAMP := $(VENV)/.installed

.PHONY: install ls-venv test test-fast lint demo walkthrough bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

LS_VERSION := 1.23.2
LS_VENV := .ls-venv
LS_STAMP := $(LS_VENV)/.installed-$(LS_VERSION)
# Label Studio in its own environment (its Django pins stay out of .venv): ~2 min, ~1 GB.
$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --upgrade pip
	$(LS_VENV)/bin/pip install --quiet 'label-studio==$(LS_VERSION)'
	touch $(LS_STAMP)

ls-venv: $(LS_STAMP)

# The initialised Label Studio data dir that tests copy, kept between runs (saves 25-80 s).
export LABEL_STUDIO_TEMPLATE_DIR ?= $(CURDIR)/$(LS_VENV)/test-template-$(LS_VERSION)

lint: $(STAMP)
	$(VENV)/bin/ruff check label_assistant tests benchmarks scripts

test: $(STAMP) $(LS_STAMP) lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
	$(MAKE) --no-print-directory demo DEMO_CHECK=1

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow and not labelstudio"

# Label Studio + the backend on sample images, until Ctrl-C; DEMO_CHECK=1: headless check.
demo: $(STAMP) $(LS_STAMP)
	HF_HUB_OFFLINE=1 DEMO_CHECK=$(DEMO_CHECK) $(PY) -m label_assistant.devtools.demo

# The workflow with the command line alone (pre-label, partial annotation, cleanup, gate).
walkthrough: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m label_assistant.devtools.walkthrough

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_rle.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
