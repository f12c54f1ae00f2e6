# The Azure Data Factory operator's component, where the seed's manifest expects it
# (/opt/operator/adf-operator, with its election state file beside it).
ARG BASE_IMAGE=operator-base:bookworm
FROM ${BASE_IMAGE}
RUN install -d -o 65532 -g 65532 /opt/operator
COPY bin/adf-operator /opt/operator/adf-operator
USER 65532:65532
WORKDIR /opt/operator
ENTRYPOINT ["/opt/operator/adf-operator"]
CMD ["operator", "adf", "--electionStateFile", "/opt/operator/leader-election.log"]
