# syntax=docker/dockerfile:1
# payment-worker: the Payment Service's headless Kafka worker.
#
#   docker build -t payment-worker .
#   docker run --rm payment-worker db upgrade          # once per deploy, before the workers
#   docker run --rm payment-worker topics create       # once per cluster
#   docker run -d -p 9108:9108 payment-worker          # the worker (run worker)
#
# Settings come from PAYMENT_WORKER_* variables and secret files (see README.md).

# --- builder: build the wheel and install it with its dependencies into a venv ---------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config ./config
COPY schemas ./schemas
COPY domain ./domain
COPY state ./state
COPY pipelines ./pipelines
COPY clients ./clients
COPY sandbox ./sandbox
RUN /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl

# --- runtime: the venv only, no compilers, no sources, not root -----------------------
FROM python:3.11-slim

RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin worker

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001

# Prometheus metrics (PAYMENT_WORKER_METRICS_PORT); the worker has no other port.
EXPOSE 9108

# Healthy while the metrics endpoint answers; assumes the default metrics port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/metrics', timeout=4).read()"]

ENTRYPOINT ["payment-worker"]
CMD ["run", "worker"]
