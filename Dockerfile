# syntax=docker/dockerfile:1
# payment-worker: the Payment Service's headless Kafka worker.
#
#   docker build -t payment-worker --build-arg PAYMENT_WORKER_BUILD_COMMIT="$(git rev-parse --short=12 HEAD)" .
#   scripts/local-images worker                        # the same, where no image registry answers
#   docker run --rm payment-worker db upgrade          # once per deploy, before the workers
#   docker run --rm payment-worker topics create       # once per cluster
#   docker run -d -p 9108:9108 payment-worker          # the worker (run worker)
#   docker run -d payment-worker run projection        # the User Service's payment view
#
# Settings come from PAYMENT_WORKER_* variables and secret files (see docs/configuration.md).
# tests/unit/test_container.py checks this file against pyproject.toml and the code;
# scripts/lint-dockerfile lints it.

# The base of both stages: the public Python image by default. A machine that reaches no
# image registry builds on a local one (scripts/local-images worker passes
# payment-worker-local/python:3.11-bookworm, Debian's Python 3.11).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
# Ready-made wheels, for a build with no network: an image holding /wheels/*.whl (the
# dependencies and the build backend), with --build-arg PIP_NO_INDEX=1. By default an empty
# folder, and pip takes everything from PyPI.
ARG WHEELS=no-wheels

FROM ${BASE_IMAGE} AS no-wheels
RUN mkdir /wheels

FROM ${WHEELS} AS wheels

# --- builder: build the wheel and install it with its dependencies into a venv ---------
FROM ${BASE_IMAGE} AS builder

# PIP_NO_INDEX=1: install from /wheels only (see WHEELS above).
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/wheels

COPY --from=wheels /wheels /wheels
RUN python3 -m venv /opt/venv
WORKDIR /src
# The packages of pyproject.toml's [tool.setuptools] packages, and nothing else.
COPY pyproject.toml README.md ./
COPY config ./config
COPY schemas ./schemas
COPY domain ./domain
COPY state ./state
COPY pipelines ./pipelines
COPY clients ./clients
COPY sandbox ./sandbox
COPY telemetry ./telemetry
# pip compiles the modules as it installs them: with a read-only root file system the
# worker could not write the bytecode at start-up.
# Then pip and setuptools leave the venv: the worker needs neither, and a runtime that
# cannot install packages is one thing less to harden.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /src/dist . \
 && /opt/venv/bin/pip install /src/dist/*.whl \
 && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools wheel

# --- runtime: the venv only, no compilers, no sources, not root -----------------------
FROM ${BASE_IMAGE}

RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin worker

COPY --from=builder /opt/venv /opt/venv

# The source commit, shown in the payment_worker_build_info metric.
ARG PAYMENT_WORKER_BUILD_COMMIT=unknown
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAYMENT_WORKER_BUILD_COMMIT=$PAYMENT_WORKER_BUILD_COMMIT

# Numeric, so Kubernetes' runAsNonRoot can verify it without resolving the name.
USER 10001:10001

# /metrics, /healthz and /readyz (PAYMENT_WORKER_METRICS_PORT); the worker has no other port.
EXPOSE 9108

# Liveness: /healthz on the metrics port, the one PAYMENT_WORKER_METRICS_PORT names (set in
# the environment; 9108 otherwise). Not /readyz: a worker waiting out a Kafka or
# PostgreSQL outage is alive, and restarting it would not help. urlopen raises on any
# answer but 2xx, and on no answer, so the check fails then.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PAYMENT_WORKER_METRICS_PORT', '9108'), timeout=4)"]

ENTRYPOINT ["payment-worker"]
CMD ["run", "worker"]
