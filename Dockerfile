# syntax=docker/dockerfile:1
# Build stage: a virtualenv with the dependencies, the project installed in place from /app.
FROM python:3.11-slim AS build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml ./
COPY tiris ./tiris
COPY handlers ./handlers
COPY db ./db
COPY consumers ./consumers
COPY generated ./generated
COPY tools ./tools
COPY migrations ./migrations
COPY openapi.yaml asyncapi.yaml alembic.ini ./
RUN pip install --no-cache-dir -e .

# Runtime stage: no build cache, a non-root user. The service reads openapi.yaml and migrations/ from /app.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8080
RUN useradd --system --uid 10001 --home /app tiris
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER tiris
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health/live', timeout=2).status != 200)"
CMD ["tiris", "serve"]
