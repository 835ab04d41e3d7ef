# stargal in a container: the whole pipeline, offline on the simulated sky by default.
#   docker build -t stargal .
#   docker run --rm -v "$PWD/data:/app/data" --user "$(id -u):$(id -g)" stargal            # the demo
#   docker run --rm -v "$PWD/data:/app/data" --user "$(id -u):$(id -g)" stargal --demo --small --workers 2
# build_run_docker.sh does both (with docker, or podman where docker is absent).
#
# Base: the official slim Python 3.11 image on Debian bookworm, pinned to a full version tag. To pin by
# content as well, build with --build-arg BASE_IMAGE=docker.io/library/python:3.11.13-slim-bookworm@sha256:<digest>.
ARG BASE_IMAGE=docker.io/library/python:3.11.13-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STARGAL_VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/stargal-matplotlib \
    KERAS_HOME=/tmp/stargal-keras \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app

# The pinned runtime requirements, installed into /opt/venv by the same bootstrap the run scripts use
# (tools/ensure_env.sh), so the scripts find the environment complete and never install anything at run time.
# `python3 -m venv` works both on the official image (/usr/local/bin) and on a Debian python3 (/usr/bin).
COPY code/requirements.txt /app/code/requirements.txt
COPY tools/ensure_env.sh /app/tools/ensure_env.sh
RUN bash -c 'source /app/tools/ensure_env.sh' && /opt/venv/bin/python -c "import tensorflow, astropy, dask.distributed"

# An unprivileged user runs the pipeline; the code is owned by root and read-only to it.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash stargal \
    && mkdir -p /app/data && chown stargal:stargal /app/data
COPY . /app
# The project itself, in editable mode, as on a developer's machine (the same bootstrap, now with pyproject.toml).
RUN bash -c 'source /app/tools/ensure_env.sh' && /opt/venv/bin/python -c "import stargal.pipeline"

# data/ is never part of the image (.dockerignore): mount the host's data folder here.
VOLUME ["/app/data"]
USER stargal
ENTRYPOINT ["/app/run_scripts.sh"]
CMD ["--demo"]
