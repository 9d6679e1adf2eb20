# The two commands of the README: `make run` and `make test`.
# Debian's interpreter when present: workers that drop root must still read the stdlib
# (an interpreter under /root, as pyenv installs it, is unreadable to the service user).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
DATA   ?= ./dovetail-data
STAMP   = $(VENV)/.installed

.PHONY: run test lint install clean bytecode

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Compiled modules for the editable install, as pip writes them for an installed package: every
# `dovetail` start (the tests start hundreds) would otherwise compile the package again where the
# environment sets PYTHONDONTWRITEBYTECODE. Only what changed is compiled again.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src >/dev/null

run: $(STAMP) bytecode
	@test -f $(DATA)/dovetail.toml || $(BIN)/dovetail --data-dir $(DATA) init
	$(BIN)/dovetail --data-dir $(DATA) serve

test: $(STAMP) bytecode
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy src
	$(BIN)/pytest -n 3 --dist worksteal --durations=30 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
