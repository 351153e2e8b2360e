# synthgap's web app. A thin wrapper over scripts/setup.sh (the same install as CI) and `synthgap serve`.
#
#   docker build -t synthgap .                                    # CPU
#   docker build -t synthgap:cuda --build-arg BASE=nvidia/cuda:13.0.1-base-ubuntu24.04 .
#   docker compose up                                             # see compose.yaml for the volumes
#   docker compose run --rm pipeline                              # fills the models volume once
#
# Settings come from SYNTHGAP_SERVE_* variables (see `synthgap serve --help`).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# A CUDA base image has no Python: take the distribution's (setup.sh makes its own virtualenv).
RUN if ! command -v python3 >/dev/null || ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home synthgap \
    && mkdir -p /app /models /data /cache && chown synthgap /app /models /data /cache

USER synthgap
WORKDIR /app
COPY --chown=synthgap . .
ENV PIP_NO_CACHE_DIR=1
RUN bash scripts/setup.sh

ENV SYNTHGAP_SERVE_HOST=0.0.0.0 \
    SYNTHGAP_SERVE_PORT=8000 \
    SYNTHGAP_SERVE_OUTPUT=/data/serve \
    SYNTHGAP_CACHE=/cache/synthgap \
    HF_HOME=/cache/huggingface
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD .venv/bin/python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SYNTHGAP_SERVE_PORT', '8000'), timeout=4)"
CMD [".venv/bin/synthgap", "serve"]
