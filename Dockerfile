# The store: one image for the web server, the migration step and the registry config step.
# Build: docker build -t store .   Run: see docker-compose.yml and docs/deploy.md.

# Build stage: the application as a wheel. Templates and migrations go into it as package
# data (pyproject.toml), so the image needs no source tree.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY templates ./templates
COPY store ./store
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    STORE_DATA_DIR=/var/lib/store/data \
    STORE_WORKERS=2

RUN python -m venv /opt/venv \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/store --shell /usr/sbin/nologin store \
    && mkdir -p /var/lib/store/data /var/lib/store/registry \
    && chown -R store:store /var/lib/store

# Dependencies first, in their own layer: only a change to pyproject.toml rebuilds it.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt
# The application: a regular install into /opt/venv (owned by root, read-only for the store
# user); its dependencies are already there.
COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/store-*.whl \
    && rm -rf /tmp/wheels \
    && store --help >/dev/null

USER store
WORKDIR /var/lib/store
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# exec: uvicorn (PID 1) gets SIGTERM and stops its workers gracefully.
CMD ["sh", "-c", "exec store serve --host 0.0.0.0 --port 8000 --workers \"${STORE_WORKERS:-2}\""]
