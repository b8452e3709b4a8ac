PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FSDD_DIR ?=
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	FSDD_DIR="$(FSDD_DIR)" $(BIN)/python -m jobs.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# The edit loop: everything that starts no Ray, browser or job (tests marked slow, by hand or by fixture in tests/conftest.py).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
