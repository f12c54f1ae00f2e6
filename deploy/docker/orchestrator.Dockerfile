# The orchestrator daemon, with opctl beside it (`docker compose exec orchestrator opctl ...`).
# With ORCHESTRATOR_COMPONENT_RUNTIME=docker it needs the engine's socket; it runs as root so
# that it can use it without knowing the socket's group.
ARG BASE_IMAGE=operator-base:bookworm
FROM ${BASE_IMAGE}
COPY bin/orchestrator bin/opctl /usr/local/bin/
ENV ORCHESTRATOR_LISTEN=0.0.0.0:7700 \
    NATS_URL=nats://nats:4222
EXPOSE 7700
ENTRYPOINT ["/usr/local/bin/orchestrator"]
