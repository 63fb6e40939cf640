# Sonopolis services (ingest, ngsi-sync, api, bridge, edge, db-init): one image, one
# process per container, chosen by the compose `command`. No secret is baked in:
# everything sensitive arrives at run time in /run/secrets (compose secrets).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/sonopolis
COPY pyproject.toml README.md ./
COPY messages messages
COPY common common
COPY smart smart
COPY ingestion ingestion
COPY detectors detectors
COPY ngsi ngsi
COPY api api
COPY safecity_bridge safecity_bridge
COPY sonopolis sonopolis
COPY dashboards dashboards
COPY simulators simulators
RUN /opt/sonopolis/bin/pip install --upgrade pip \
 && /opt/sonopolis/bin/pip install .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="Sonopolis" \
      org.opencontainers.image.description="Acoustic sensors for a city, without surveillance" \
      org.opencontainers.image.licenses="EUPL-1.2"
# libsndfile for soundfile; tini reaps children and forwards SIGTERM for a clean stop.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsndfile1 tini \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sonopolis \
 && useradd --system --uid 10001 --gid sonopolis --home-dir /var/lib/sonopolis --shell /usr/sbin/nologin sonopolis \
 && mkdir -p /var/lib/sonopolis/edge-queue /var/lib/sonopolis/opendata \
 && chown -R sonopolis:sonopolis /var/lib/sonopolis
COPY --from=build /opt/sonopolis /opt/sonopolis
ENV PATH=/opt/sonopolis/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SONOPOLIS_LOG_LEVEL=INFO \
    ORT_DISABLE_TELEMETRY=1
# ORT_DISABLE_TELEMETRY: onnxruntime >= 1.2x ships 1DS telemetry on Linux (device id file,
# upload of process/session events). A sensor network that promises "nothing leaves but
# levels and events" opts out; detectors/classifier.py also sets it before loading ORT.
USER sonopolis:sonopolis
WORKDIR /var/lib/sonopolis
ENTRYPOINT ["/usr/bin/tini", "--", "sonopolis"]
CMD ["--help"]
