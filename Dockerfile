# syntax=docker/dockerfile:1
# One image for every role: the API (`serve`, the default command), the worker (`worker`) and the one-shot
# schema upgrade (`migrate`). See docker-compose.yml for a cluster of them.
#
#   docker build -t aiops-agent-executor .
#   docker run --rm aiops-agent-executor --help

# --- builder: a wheel of the project, installed with its dependencies into a virtualenv ------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /build
RUN python -m venv /opt/venv
# Only what the wheel is built from (README.md is the package's readme).
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl

# --- runtime: the virtualenv only, run as an unprivileged user ---------------------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIOPS_DATA_DIR=/app/data

RUN groupadd --system --gid 10001 aiops \
    && useradd --system --uid 10001 --gid aiops --home-dir /app --no-create-home --shell /usr/sbin/nologin aiops

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
RUN mkdir -p /app/data && chown -R 10001:10001 /app

USER 10001:10001

EXPOSE 8000

# The API's liveness route (slim has no curl). A worker serves no API: compose overrides this for workers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["aiops-executor"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
