# The PostgreSQL operator's component, where its example manifest expects it
# (/opt/operator/postgres-operator). The server login comes from a Secret, in the
# environment the orchestrator gives the container.
ARG BASE_IMAGE=operator-base:bookworm
FROM ${BASE_IMAGE}
RUN install -d -o 65532 -g 65532 /opt/operator
COPY bin/postgres-operator /opt/operator/postgres-operator
USER 65532:65532
WORKDIR /opt/operator
ENTRYPOINT ["/opt/operator/postgres-operator"]
