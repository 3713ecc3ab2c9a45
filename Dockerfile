# syntax=docker/dockerfile:1
# The OANet stream worker (`oanet worker`), also used for `oanet topics create` and `oanet replay`.
#
#   docker build -t oanet-worker:0.1.0 .
#
# Multi-stage: the build stage resolves nothing (every version comes from requirements.lock),
# installs into a virtual environment and unpacks the OCR models; the runtime stage copies the
# environment and the models onto a clean slim image and runs as an unprivileged user.
# The base image is pinned by tag; its digest is not recorded because these files were written
# on machines without a container registry: pin `python:3.11.14-slim-bookworm@sha256:...` after
# your first pull.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (their own layer, rebuilt only when the lock changes). The worker reaches
# the model through Triton: the PyTorch/CUDA stack and development tools are filtered out
# (deploy/docker/worker-exclude.txt); `pip check` proves nothing kept needs them.
COPY requirements.lock deploy/docker/worker-exclude.txt ./
# The lock is hashed (`make lock`): a requirement is its `name==version \` line plus the indented
# `--hash` lines under it, so whole blocks are dropped, and pip checks every hash it installs.
RUN awk 'NR == FNR { if ($0 !~ /^#/ && NF) { n = tolower($1); gsub(/_/, "-", n); skip[n] = 1 }; next } \
         /^[A-Za-z0-9]/ { n = tolower($1); sub(/[=\[].*/, "", n); gsub(/_/, "-", n); drop = (n in skip) } \
         /^#/ { next } !drop' worker-exclude.txt requirements.lock > worker.lock \
    && pip install --no-deps --only-binary=:all: --require-hashes -r worker.lock \
    && pip check
COPY pyproject.toml README.md ./
COPY oanet oanet
COPY stream stream
COPY training training
COPY triton_models triton_models
COPY deploy deploy
COPY bench bench
COPY scripts/fetch_ocr_models.py scripts/
RUN pip install --no-deps --no-build-isolation . \
    && python scripts/fetch_ocr_models.py --out /opt/oanet/ocr-models

# ---------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
# opencv-contrib-python (pinned by paddlex) is the GUI build: it needs libGL and GLib at import.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin oanet
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/oanet/ocr-models /opt/oanet/ocr-models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OANET_OCR__MODEL_DIR=/opt/oanet/ocr-models \
    OANET_OCR__CACHE_DIR=/tmp/oanet/ocr-features \
    OANET_OCR__PADDLEX_HOME=/tmp/oanet/paddlex \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# /metrics, /live and /ready of the worker (OANET_WORKER__METRICS_PORT).
EXPOSE 9464
ENTRYPOINT ["oanet"]
CMD ["worker"]
