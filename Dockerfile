# The segstream worker image. `docker compose up` builds it for the topic
# creator and both workers; see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

COPY pyproject.toml README.md ./
COPY streams/ streams/
COPY models/ models/
COPY schemas/ schemas/
COPY ops/ ops/
RUN pip install .

# The RocksDB tables live in /data, so the runtime user must own it before the
# VOLUME line: a fresh named volume copies the directory's ownership.
RUN useradd --system --user-group --uid 10001 --no-create-home --home-dir /app segstream \
    && mkdir /data \
    && chown segstream:segstream /data

# Settings' defaults suit a laptop (loopback, ./var); a container must accept
# connections from other containers and keep its state on the volume.
ENV SEGSTREAM_WEB_HOST=0.0.0.0 \
    SEGSTREAM_DATA_DIR=/data
VOLUME ["/data"]

USER 10001:10001
EXPOSE 6066

# No ENTRYPOINT, so `command: segstream topics create` replaces the whole line.
CMD ["segstream", "worker"]
