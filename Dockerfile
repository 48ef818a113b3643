# syntax=docker/dockerfile:1
# Build stage: wheels for the project and its dependencies (compilers stay here).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app app
COPY simulator simulator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: slim, non-root, migrations then the server.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 ALEMBIC_CONFIG=/srv/alembic.ini
RUN useradd --create-home --uid 10001 bff
WORKDIR /srv
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY alembic.ini ./
COPY migrations migrations
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh
USER bff
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
ENTRYPOINT ["entrypoint.sh"]
CMD ["serve"]
