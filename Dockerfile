# One image for the compose stack: the Dagster gRPC code server (the code location), the
# webserver, the daemon and the simulator run from it with different commands.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/astra

# Dependencies first, in their own layer: a code change does not reinstall them.
COPY pyproject.toml ./
RUN mkdir astra_pipeline resources sensors \
    && touch astra_pipeline/__init__.py resources/__init__.py sensors/__init__.py \
    && pip install . \
    && pip uninstall --yes astra-pipeline \
    && rm -rf astra_pipeline resources sensors build *.egg-info

COPY astra_pipeline ./astra_pipeline
COPY resources ./resources
COPY sensors ./sensors
RUN pip install --no-deps . && rm -rf build *.egg-info

# The Postgres instance (credentials from DAGSTER_PG_*) and the workspace that points the
# webserver and the daemon at the code server.
COPY dagster.yaml ${DAGSTER_HOME}/dagster.yaml
COPY workspace.compose.yaml ./workspace.compose.yaml

# Named volumes take the owner of these folders on first mount: the user can write them.
RUN useradd --create-home --uid 10001 astra \
    && mkdir -p ${DAGSTER_HOME}/storage \
    && chown -R astra:astra ${DAGSTER_HOME}
USER astra

EXPOSE 4000
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "4000", \
     "--module-name", "astra_pipeline.definitions"]
