# Each target is one line; the README and .ci/run use these entry points.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench

install: ; python3 -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[test]'
demo: install ; $(VENV)/bin/controltower demo
test: install ; $(PY) -m ruff check . && $(VENV)/bin/lint-imports && $(PY) -m pytest
lint: ; $(PY) -m ruff check . && $(VENV)/bin/lint-imports
bench: ; $(PY) bench/ingest.py && $(PY) bench/sla.py
