# syntax=docker/dockerfile:1
# The Profile Service image: `docker build -t profile-service .` at the repository root.
# Two stages: the builder installs the project (which generates the protobuf code) into a
# virtual environment; the runtime stage gets that environment and nothing else.
# tests/ops/test_image_install.py runs this file's install commands in a fresh virtualenv.

# Both stages use the same base: the virtual environment links to its interpreter.
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# Only what the build reads (.dockerignore keeps the rest of the context out).
COPY pyproject.toml setup.py README.md ./
COPY scripts/ scripts/
COPY protos/ protos/
COPY migrations/ migrations/
COPY profile_service/ profile_service/
# A regular (not editable) install. pip fetches the build requirements of pyproject.toml,
# grpcio-tools among them, into a throwaway build environment; setup.py runs protoc there.
# Every dependency ships a manylinux wheel, so no compiler is needed.
RUN /opt/venv/bin/pip install --no-cache-dir '/src[server,tracing]' \
    && /opt/venv/bin/profile-service --help > /dev/null

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="profile-service" \
      org.opencontainers.image.description="Training profiles over gRPC, with PostgreSQL row-level security as the enforcement."
# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd;
# the passwd entry is there for libpq, which looks the local user up.
RUN groupadd --system --gid 10001 profile \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin profile
COPY --from=builder /opt/venv /opt/venv
# Bytecode was compiled at install time; never write it at run time (read-only root filesystem).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRPC_PORT=50051 \
    METRICS_PORT=9090
USER 10001:10001
# 50051: gRPC (API, health, reflection). 9090: Prometheus metrics.
EXPOSE 50051 9090
ENTRYPOINT ["profile-service"]
CMD ["serve"]
