# EchoTune: `make demo` runs the platform, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test pipeline serve audit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=78.1.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(BIN)/echotune demo

test: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

pipeline: install
	$(BIN)/echotune pipeline

serve: install
	$(BIN)/echotune serve

# known advisories in the installed environment (needs PyPI's vulnerability API; not part of CI)
audit: install
	@$(BIN)/python -m pip install --quiet "pip-audit>=2.7,<3"
	@$(BIN)/python .ci/audit.py

clean:
	rm -rf data var dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs mlruns/*
