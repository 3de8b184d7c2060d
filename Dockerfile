# syntax=docker/dockerfile:1
# One image for every role: `tiris serve` (the default), `tiris consume` and `tiris migrate` (pass the command).

# Build stage: a virtualenv with the locked dependencies, then the project itself installed in place from /app.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --requirement /tmp/requirements.txt
COPY tiris ./tiris
COPY handlers ./handlers
COPY db ./db
COPY consumers ./consumers
COPY generated ./generated
COPY tools ./tools
COPY migrations ./migrations
COPY openapi.yaml asyncapi.yaml alembic.ini ./
# In place (-e): the service reads openapi.yaml, asyncapi.yaml and migrations/ next to its code in /app.
# Byte-compiled here because the runtime's root filesystem may be read-only.
RUN pip install --no-deps --editable . \
 && python -m compileall -q /app /opt/venv

# Runtime stage: the same slim base, no build leftovers, an unprivileged user that owns nothing it runs.
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8080
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app tiris
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# No curl in the slim image: the standard library asks the liveness endpoint (PORT may be overridden).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8080'), timeout=4)"]
ENTRYPOINT ["tiris"]
CMD ["serve"]
