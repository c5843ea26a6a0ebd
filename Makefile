# pelk_mm: `make demo` is the quickstart; `make test` is what CI runs.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test demo

install:
	bash tools/install.sh

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(PY) tools/analysis/model_summary.py tiny
