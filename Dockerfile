# EchoTune: one image for the API (`serve`, the default), the feedback worker (`worker`), the Dagster
# code server (`code-server`), the MLflow UI (`mlflow-ui`) and one-off commands (`pipeline`,
# `model status`, ...; see deploy/image/entrypoint.sh). `make image` builds it and runs it against this
# machine's Redis and PostgreSQL; `make test` lints this file with hadolint (.hadolint.yaml lists the
# ignored rules).
#
#   docker build --build-arg BASE_IMAGE=debian:bookworm-slim -t echotune .
#
# The base is any Debian bookworm image: python3 (3.11), python3-venv, ca-certificates and libgomp1
# are installed when it lacks them. Without a registry, deploy/image/base-image.sh builds one from
# Debian's packages. Build with BuildKit (RUN --mount) and a reachable Debian mirror (the build stage
# installs a C compiler); deploy/image/build.sh passes the pip index and CA bundle.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS python
# libgomp1: LightFM's OpenMP extension (without it LightFM silently trains on one thread).
# A no-op on the debootstrap base, which has them all.
RUN if ! dpkg-query --show python3 python3-venv ca-certificates libgomp1 >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates libgomp1 \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# --- build: a venv with the project installed (not editable) ----------------------------------
FROM python AS build
# lightfm-next 1.19.0 is an sdist only: compiled here, never in the runtime image
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev python3-dev \
    && rm -rf /var/lib/apt/lists/*
# the index pip installs from; the CA bundle of a TLS-intercepting proxy comes as the secret pip_ca
ARG PIP_INDEX_URL=https://pypi.org/simple
# LightFM's own flags add -march=native: an image built on a newer CPU would die with SIGILL on an
# older node. Its other flags are kept; the code is generic x86-64.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 \
    LIGHTFM_NO_CFLAGS=1 \
    CFLAGS="-O2 -ffast-math -fno-finite-math-only"
RUN python3 -m venv /opt/venv
WORKDIR /src
# The dependencies first, in a layer of their own that only a change of pyproject.toml rebuilds (the
# project is installed here without its code, and again below with it).
# setuptools: the venv's own copy is old (CVE-2025-47273), the same floor as the Makefile.
# The k8s extra (dagster-k8s): runs launched by Dagster's Helm chart (K8sRunLauncher) load that instance.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_ca \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && touch README.md \
    && /opt/venv/bin/pip install --upgrade "pip>=24" "setuptools>=78.1.1" \
    && /opt/venv/bin/pip install ".[k8s,lightfm]"
COPY README.md ./
COPY echotune ./echotune
COPY pipelines ./pipelines
COPY serving ./serving
COPY experiments ./experiments
COPY core ./core
COPY models ./models
# the code: no index needed (the venv's setuptools builds it)
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --force-reinstall --no-cache-dir . \
    && /opt/venv/bin/echotune --help >/dev/null

# --- runtime: the venv, the instance and experiment files, a non-root user ---------------------
FROM python AS runtime
# uid and gid 10001: the manifests' runAsUser/runAsGroup/fsGroup
RUN groupadd --system --gid 10001 echotune \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/echotune --shell /usr/sbin/nologin echotune
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# ECHOTUNE_HOME: what the code reads besides the installed packages (experiment definitions). The
# Dagster instance is not copied: `echotune pipeline` writes dagster_home/dagster.yaml from the settings
# (ECHOTUNE_DATABASE_URL), and Dagster's Helm chart and docker-compose.yaml mount their own.
COPY workspace.yaml ./
COPY experiments/definitions ./experiments/definitions
COPY deploy/image/entrypoint.sh /usr/local/bin/echotune-entrypoint
COPY deploy/image/healthcheck.py /usr/local/bin/echotune-healthcheck
# The local defaults when ECHOTUNE_STORAGE_URL and ECHOTUNE_DATABASE_URL are unset, var/ (per host by
# nature: the feedback spool, the serving cache) and storage/ (docker-compose.yaml's shared volume).
# Created here, owned by the user: a fresh named volume copies the owner of the folder it is mounted on.
RUN mkdir -p data var storage mlruns/artifacts dagster_home/storage \
    && chown -R echotune:echotune data var storage mlruns dagster_home
# One BLAS thread per process, as `echotune serve` and `worker` set for themselves: threaded BLAS
# inside a threaded server is ~60x slower. Training in the code server or a run pod is single-threaded
# too unless the deployment raises OPENBLAS_NUM_THREADS for it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    DAGSTER_HOME=/app/dagster_home \
    ECHOTUNE_HOME=/app \
    ECHOTUNE_API_HOST=0.0.0.0
USER 10001:10001
# API, worker metrics, Dagster code server
EXPOSE 8000 9101 4000
# One check for every role: the script asks what PID 1 runs and probes that role only (the API's
# /health, the worker's metrics port, the code server's gRPC port); one-off commands pass.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["echotune-healthcheck"]
ENTRYPOINT ["echotune-entrypoint"]
CMD ["serve"]
