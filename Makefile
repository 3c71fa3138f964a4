# Two entry points (see README): `make serve` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 0.0.0.0
PORT ?= 9090
# the packages mypy checks (the no-torch floors and the service; the rest is checked as far as they import it)
TYPED := labelstudio storage backend annotate

.PHONY: serve test test-fast test-slow lint format typecheck install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/adaptiveclick serve --host $(HOST) --port $(PORT)

# the whole suite: the fast tier first (a few minutes), then the slow end-to-end tests
test: test-fast test-slow

# (pytest's exit code 5 means PYTEST_ARGS selected no test of that tier: not a failure)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(TYPED)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy $(TYPED)

clean:
	rm -rf $(VENV) build *.egg-info
