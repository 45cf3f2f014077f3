# The store: one image for the web server, the migration step and the registry config step.
# Build: docker build -t store .   Run: see docker-compose.yml and docs/deploy.md.
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

WORKDIR /app
# Dependencies first, in their own layer: only a change to pyproject.toml rebuilds it.
COPY pyproject.toml README.md ./
RUN mkdir store && touch store/__init__.py \
    && pip install . \
    && pip uninstall -y store \
    && rm -rf store build ./*.egg-info
# The application. Templates and migrations are read from beside the package, so the tree
# is installed in place (editable), owned by root and read-only for the store user.
COPY alembic.ini ./
COPY migrations ./migrations
COPY templates ./templates
COPY store ./store
RUN pip install --no-deps -e . && store --help >/dev/null

USER store
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# exec: uvicorn (PID 1) gets SIGTERM and stops its workers gracefully.
CMD ["sh", "-c", "exec store serve --host 0.0.0.0 --port 8000 --workers \"${STORE_WORKERS:-2}\""]
