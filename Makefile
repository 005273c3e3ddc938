# EchoTune: `make demo` runs the platform, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo lint test check pipeline serve image audit bench clean

# every dependency from a wheel (no compiler needed); LightFM (the `lightfm` algorithm, a source release)
# only where a C compiler exists
install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=78.1.1"
	$(BIN)/python -m pip install --quiet --only-binary=:all: -e ".[dev]"
	@if command -v cc >/dev/null 2>&1; then \
		$(BIN)/python -m pip install --quiet -e ".[lightfm]"; \
	else \
		echo "no C compiler (cc): the lightfm algorithm is left out; every other part is installed"; \
	fi
	@touch $(STAMP)

# promtool for the alert-rule tests (from PATH or Debian's package; the tests skip without it)
$(BIN)/promtool: | $(STAMP)
	ops/prometheus/install-promtool.sh $@

demo: install
	$(BIN)/echotune demo

# on every core (TEST_WORKERS=0: in one process); each module runs whole in one worker, so a fixture it
# shares (a published model, a materialized platform) is built once
TEST_WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

# the layers (import-linter), then lint and format (ruff, [tool.ruff] in pyproject.toml), then the tests
lint: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint $(BIN)/promtool
	$(PYTEST)

# the inner loop: the layer contract and every test not marked slow, stopping at the first failure
# (CI and `make test` run the whole suite)
check: lint
	$(PYTEST) -m "not slow" -x -q

pipeline: install
	$(BIN)/echotune pipeline

serve: install
	$(BIN)/echotune serve

# The container image (Dockerfile), then the image run against this machine's Redis and PostgreSQL:
# `echotune pipeline` once; the API, a worker, the code server and the MLflow UI; /health/ready, one
# recommendation, the champion in the MLflow UI and every role's health check. Minutes, not
# part of `make test` (which lints the Dockerfile and checks the manifests). Needs a Docker daemon with
# BuildKit; the default base is built from Debian's packages with debootstrap (root, no registry
# needed): `make image BASE_IMAGE=debian:bookworm-slim` where a registry is reachable.
IMAGE      ?= echotune:latest
BASE_IMAGE ?= echotune-base:bookworm

image:
	@case "$(BASE_IMAGE)" in echotune-base:*) deploy/image/base-image.sh $(BASE_IMAGE) ;; esac
	deploy/image/build.sh $(IMAGE) $(BASE_IMAGE)
	deploy/image/smoke-test.sh $(IMAGE)

# known advisories in the installed environment (needs PyPI's vulnerability API; not part of CI)
audit: install
	@$(BIN)/python -m pip install --quiet "pip-audit>=2.7,<3"
	@$(BIN)/python .ci/audit.py

clean:
	rm -rf data var dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs mlruns/*
