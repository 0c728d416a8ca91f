# syntax=docker/dockerfile:1
# The one image of prewarm. Every prewarm service of docker-compose.yml runs it: Airflow 3
# (api-server, scheduler, dag-processor, triggerer, Celery workers), the MLflow tracking server,
# the Feast feature server and the router (`prewarm router serve`).
#
#   docker build -t prewarm:0.1.0 .
#
# The environment is the checkout's fully pinned requirements.txt, installed with pip exactly as
# the Makefile does; torch comes from PyTorch's CPU index first (the pin in requirements.txt is
# then already satisfied by the +cpu build, so no CUDA wheels are pulled in).

FROM python:3.11.14-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREWARM_HOME=/var/lib/prewarm \
    AIRFLOW_HOME=/opt/airflow

# curl: the services' healthchecks; libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends curl libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 prewarm \
    && useradd --system --uid 10001 --gid prewarm --no-create-home \
       --home-dir /var/lib/prewarm --shell /usr/sbin/nologin prewarm

WORKDIR /opt/prewarm

# Dependencies first, so that a code change does not reinstall them.
COPY requirements.txt ./
RUN python -m pip install pip==26.3 setuptools==84.2.1 wheel==0.48.0 \
    && python -m pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -m pip install --requirement requirements.txt

COPY . .
# Editable, so that settings.dags_folder (the checkout's dags/) resolves to /opt/prewarm/dags.
RUN python -m pip install --no-deps --no-build-isolation --editable . \
    && mkdir -p "${PREWARM_HOME}" "${AIRFLOW_HOME}/logs" "${AIRFLOW_HOME}/auth" \
    && chown -R prewarm:prewarm "${PREWARM_HOME}" "${AIRFLOW_HOME}"

USER prewarm:prewarm

# Airflow api-server, Airflow worker log server, MLflow, Feast feature server, router.
EXPOSE 8080 8793 5000 6566 8765

CMD ["prewarm", "--help"]
