PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FSDD_DIR ?=
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint docs install lock clean

# Every install is the lock's: the same versions, checked by hash, today and next month.
# pesq has no wheel: pip checks its sdist's hash and builds it (a C compiler is needed) in an isolated
# environment, whose build requirements (pesq's setup_requires: setuptools, Cython, numpy, pytest-runner)
# come from the index at their newest versions, not hash-checked: pip checks no build dependency.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -c "from vae.harmonics import warm_up; warm_up()"  # numba's cache, written once (see warm_up)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	FSDD_DIR="$(FSDD_DIR)" $(BIN)/python -m jobs.demo

# Two pytest-xdist workers (CI has 2 cores): the tests on the session's Ray in one, the rest beside them
# (the groups are set in tests/conftest.py). PYTEST_WORKERS=0 runs everything in this one process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=15 $(PYTEST_ARGS)

# Formatter, linter and type check: what CI runs before the tests.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# The edit loop: everything that starts no Ray, browser or job (tests marked slow, by hand or by fixture in tests/conftest.py).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/): strict, so a broken link or a page missing from the nav fails.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) runs build/site site

# Re-resolve the lock files from pyproject.toml's ranges (the newest versions they allow), then
# `make install` installs them. requirements-gpu.lock is the same set plus CUDA's libraries, for
# the cluster's GPU image; it is constrained to requirements.lock so both agree on every package.
LOCK_FLAGS := --universal --python-version 3.11 --fork-strategy fewest --generate-hashes --quiet
lock:
	$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(PYTHON) -m uv pip compile pyproject.toml --extra test --extra dev $(LOCK_FLAGS) --upgrade -o requirements.lock
	$(PYTHON) -m uv pip compile pyproject.toml --extra gpu $(LOCK_FLAGS) --upgrade -c requirements.lock -o requirements-gpu.lock
