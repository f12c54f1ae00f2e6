#!/usr/bin/env bash
# One command from a fresh clone to a running control plane, playing the Azure Data Factory
# walk-through: builds the binaries, starts NATS with JetStream (unless NATS_URL points at one),
# the orchestrator, a stand-in for Azure's APIs (unless AZURE_RESOURCE_MANAGER_ENDPOINT is
# set) and the ADF operator's component, applies the example secret, operator and pipeline run,
# and shows them with opctl.
#
#   bash deploy/quickstart.sh          start everything (state in .data/)
#   bash deploy/quickstart.sh stop     stop what it started
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${QUICKSTART_DATA:-.data}
BIN=target/release
mkdir -p "$DATA"

stop() {
  for name in adf-operator adf-standin orchestrator nats; do
    if [ -f "$DATA/$name.pid" ]; then
      kill "$(cat "$DATA/$name.pid")" 2>/dev/null || true
      rm -f "$DATA/$name.pid"
    fi
  done
  echo "stopped"
}

wait_port() { # host port what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$3 did not come up on $1:$2; see $DATA/$3.log" >&2
  exit 1
}

start_bg() { # name command...
  local name=$1; shift
  if [ -f "$DATA/$name.pid" ] && kill -0 "$(cat "$DATA/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$DATA/$name.pid"))"
    return
  fi
  nohup "$@" >"$DATA/$name.log" 2>&1 &
  echo $! >"$DATA/$name.pid"
  echo "$name started (pid $!, log $DATA/$name.log)"
}

if [ "${1:-}" = "stop" ]; then stop; exit 0; fi

echo "building (release)…"
cargo build --release --bins -p operator-orchestrator -p operator-component

if [ -z "${NATS_URL:-}" ]; then
  NATS_SERVER=$(bash deploy/ensure-nats-server.sh)
  start_bg nats "$NATS_SERVER" -js -a 127.0.0.1 -p 4222 -sd "$DATA/nats"
  export NATS_URL=nats://127.0.0.1:4222
  wait_port 127.0.0.1 4222 nats
fi

export ORCHESTRATOR_LISTEN=${ORCHESTRATOR_LISTEN:-127.0.0.1:7700}
export OPCTL_SERVER=${OPCTL_SERVER:-http://$ORCHESTRATOR_LISTEN}
start_bg orchestrator "$BIN/orchestrator"
wait_port "${ORCHESTRATOR_LISTEN%:*}" "${ORCHESTRATOR_LISTEN##*:}" orchestrator

OPCTL="$BIN/opctl"
"$OPCTL" apply -f deploy/examples/adf-secret.yaml -w user-system
"$OPCTL" apply -f deploy/examples/adf-operator.yaml

if [ -z "${AZURE_RESOURCE_MANAGER_ENDPOINT:-}" ]; then
  start_bg adf-standin "$BIN/adf-standin" --listen 127.0.0.1:7800
  wait_port 127.0.0.1 7800 adf-standin
  export AZURE_AUTHORITY_HOST=http://127.0.0.1:7800 AZURE_RESOURCE_MANAGER_ENDPOINT=http://127.0.0.1:7800
fi
# The component reads its credentials from its environment: here, the example Secret's values.
# The NATS variables are the operator's natsApi (see `opctl get -t operator -n adf-operator -d`).
export AZURE_TENANT_ID=${AZURE_TENANT_ID:-00000000-0000-0000-0000-000000000001}
export AZURE_CLIENT_ID=${AZURE_CLIENT_ID:-00000000-0000-0000-0000-000000000002}
export AZURE_CLIENT_SECRET=${AZURE_CLIENT_SECRET:-replace-me}
export AZURE_SUBSCRIPTION_ID=${AZURE_SUBSCRIPTION_ID:-00000000-0000-0000-0000-000000000003}
ENTITY_OF_INTEREST_MESSAGE_STREAM=dataos-azure-entities \
ENTITY_OF_INTEREST_MESSAGE_QUEUE=azure-entities-adf-52323 \
ENTITY_OF_INTEREST_MESSAGE_QUERY_SUBJECT=dataos.operator.adf.query \
ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT=dataos.operator.adf.reply \
OPERATOR_STATE_STORE_TYPE=jetstream_kv \
  start_bg adf-operator "$BIN/adf-operator" operator adf --electionStateFile "$DATA/adf-election.log"

"$OPCTL" apply -f deploy/examples/adf-pipeline-run.yaml -w public
"$OPCTL" get -t operator
"$OPCTL" get -t resource -w public
cat <<MSG

The control plane is running, with an Azure Data Factory pipeline run under way. Try:
  export OPCTL_SERVER=$OPCTL_SERVER PATH=\$PWD/$BIN:\$PATH
  opctl get -t resource -w public                       # RUNTIME goes inprogress → succeeded
  opctl get -t resource -w public -n pipeline-run-1 -d  # the run and its activities, live
  opctl delete -t resource -w public -n pipeline-run-1
  bash deploy/quickstart.sh stop
MSG
