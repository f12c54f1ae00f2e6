# The stand-in for Azure's token endpoint and Data Factory REST API.
ARG BASE_IMAGE=operator-base:bookworm
FROM ${BASE_IMAGE}
COPY bin/adf-standin /usr/local/bin/adf-standin
USER 65532:65532
ENV ADF_STANDIN_LISTEN=0.0.0.0:7800
EXPOSE 7800
ENTRYPOINT ["/usr/local/bin/adf-standin"]
