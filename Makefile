# `make run`: create .venv, install airfleet with the pinned constraints, run the quickstart.
# `make test`: the same install, then the layering contracts and the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.airfleet-installed

.PHONY: install run test bench reproduction flwr-run clean

SCENARIO ?= scenarios/quickstart.toml

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/airfleet run scenarios/quickstart.toml

# import-linter first: the layering contracts in pyproject.toml ([tool.importlinter])
test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

bench: install
	for b in benchmarks/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# docs/reproduction.md from the study outputs kept in docs/evidence (no training). To add
# runs: airfleet reproduction RUN_DIR ... --evidence docs/evidence -o docs/reproduction.md
reproduction: install
	$(VENV)/bin/airfleet reproduction --runs-dir docs/evidence -o docs/reproduction.md

# `flwr run .` through a local managed SuperLink, with this project's .venv (no per-run
# environment build, which would download another torch).
flwr-run: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
	  $(VENV)/bin/flwr run . --stream \
	  --run-config 'scenario="$(abspath $(SCENARIO))"' \
	  --federation-config "num-supernodes=$$($(VENV)/bin/airfleet devices $(SCENARIO))"

clean:
	rm -rf $(VENV) .pytest_cache runs
