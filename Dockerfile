# The store: one image for the web server, the migration step and the registry config step.
# Build: docker build -t store .   Run: see docker-compose.yml and docs/deploy.md.
#
# BASE: any image with Python 3.11 as `python3` (with its venv module) and a shell with
# `useradd`: the official python:3.11-slim by default, or a Debian bookworm root file system
# with python3, python3-venv and ca-certificates (tests/image builds the image on one:
# docs/deploy.md, "The image").
ARG BASE=python:3.11-slim

# Build stage: a virtualenv at /opt/venv with the locked versions of the dependencies
# (constraints.txt) and the store's wheel. Templates and migrations go into the wheel as
# package data (pyproject.toml), so the image needs no source tree.
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
# Dependencies first, in their own layer: only a change to pyproject.toml or the lock
# rebuilds it. PIP_CONSTRAINT holds the build backend (setuptools) to its locked version too.
COPY pyproject.toml constraints.txt ./
RUN python3 -m venv /opt/venv \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/venv/bin/pip install --constraint constraints.txt --requirement requirements.txt
COPY README.md ./
COPY migrations ./migrations
COPY templates ./templates
COPY store ./store
RUN PIP_CONSTRAINT=/src/constraints.txt /opt/venv/bin/pip wheel --no-deps --wheel-dir dist . \
    && /opt/venv/bin/pip install --no-deps dist/store-*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/store --version \
    && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools

# The image: the base, a system user and the virtualenv (without pip and setuptools, which
# only the build needs); none of the build stage's sources, wheels or pip downloads.
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    STORE_DATA_DIR=/var/lib/store/data \
    STORE_HOST=0.0.0.0 \
    STORE_PORT=8000 \
    STORE_WORKERS=2

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/store --shell /usr/sbin/nologin store \
    && mkdir -p /var/lib/store/data /var/lib/store/registry \
    && chown -R store:store /var/lib/store \
    && chmod 0700 /var/lib/store/data

# Owned by root, read-only for the store user.
COPY --from=build /opt/venv /opt/venv

USER store
WORKDIR /var/lib/store
EXPOSE 8000
# STORE_HOST and STORE_PORT: where the server listens (with host networking, e.g.
# 127.0.0.1 and a free port); the health check asks 127.0.0.1 on STORE_PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STORE_PORT', '8000') + '/healthz', timeout=4)"]
# exec: uvicorn (PID 1) gets SIGTERM and stops its workers gracefully.
CMD ["sh", "-c", "exec store serve --host \"${STORE_HOST:-0.0.0.0}\" --port \"${STORE_PORT:-8000}\" --workers \"${STORE_WORKERS:-2}\""]
