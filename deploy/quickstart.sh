#!/usr/bin/env bash
# One command from a fresh clone to a running control plane, playing the Azure Data Factory
# walk-through: builds the binaries, starts NATS with JetStream (unless NATS_URL points at one),
# a stand-in for Azure's APIs (unless AZURE_RESOURCE_MANAGER_ENDPOINT is set) and the
# orchestrator, applies the example secret, operator (whose component the orchestrator then
# runs as local processes, 2 replicas) and pipeline run, and shows them with opctl.
#
#   bash deploy/quickstart.sh          start everything (state in .data/)
#   bash deploy/quickstart.sh stop     stop what it started
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${QUICKSTART_DATA:-.data}
BIN=target/release
mkdir -p "$DATA"

stop() {
  # The orchestrator first: on SIGTERM it stops the components it runs, then exits.
  for name in orchestrator adf-operator adf-standin nats; do
    if [ -f "$DATA/$name.pid" ]; then
      pid=$(cat "$DATA/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
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
cargo build --release --bins -p operator-orchestrator -p opctl -p adf-operator -p adf-standin -p demo-operator

if [ -z "${NATS_URL:-}" ]; then
  NATS_SERVER=$(bash deploy/ensure-nats-server.sh)
  start_bg nats "$NATS_SERVER" -js -a 127.0.0.1 -p 4222 -sd "$DATA/nats"
  export NATS_URL=nats://127.0.0.1:4222
  wait_port 127.0.0.1 4222 nats
fi

if [ -z "${AZURE_RESOURCE_MANAGER_ENDPOINT:-}" ]; then
  start_bg adf-standin "$BIN/adf-standin" --listen 127.0.0.1:7800
  wait_port 127.0.0.1 7800 adf-standin
  # Every component the orchestrator runs gets the stand-in in place of Azure's endpoints.
  export ORCHESTRATOR_COMPONENT_ENV=${ORCHESTRATOR_COMPONENT_ENV:-AZURE_AUTHORITY_HOST=http://127.0.0.1:7800,AZURE_RESOURCE_MANAGER_ENDPOINT=http://127.0.0.1:7800}
fi

# The orchestrator runs operators' components as local processes (the `process` runtime).
export ORCHESTRATOR_LISTEN=${ORCHESTRATOR_LISTEN:-127.0.0.1:7700}
export OPCTL_SERVER=${OPCTL_SERVER:-http://$ORCHESTRATOR_LISTEN}
# The admin's API key: made (owner-only) by the orchestrator at its first start, read after.
export ORCHESTRATOR_ADMIN_APIKEY_FILE=${ORCHESTRATOR_ADMIN_APIKEY_FILE:-$PWD/$DATA/admin.apikey}
# The key sealing secrets at rest: made at the first start, beside the NATS state it unlocks.
if [ -z "${ORCHESTRATOR_SECRET_KEYS:-}" ]; then
  export ORCHESTRATOR_SECRET_KEYS_FILE=${ORCHESTRATOR_SECRET_KEYS_FILE:-$PWD/$DATA/secret-keys}
fi
start_bg orchestrator "$BIN/orchestrator"
wait_port "${ORCHESTRATOR_LISTEN%:*}" "${ORCHESTRATOR_LISTEN##*:}" orchestrator
export OPCTL_APIKEY=${OPCTL_APIKEY:-$(cat "$ORCHESTRATOR_ADMIN_APIKEY_FILE")}

OPCTL="$BIN/opctl"
"$OPCTL" apply -f deploy/examples/adf-secret.yaml -w user-system
# The example operator as it is, but for where its component lives: the image's path
# /opt/operator becomes this build's binary, and the election file goes to $DATA.
sed -e "s#/opt/operator/adf-operator#$PWD/$BIN/adf-operator#" \
    -e "s#/opt/operator/leader-election.log#$(cd "$DATA" && pwd)/adf-election.log#" \
    deploy/examples/adf-operator.yaml | "$OPCTL" apply -f -

"$OPCTL" apply -f deploy/examples/adf-pipeline-run.yaml -w public
"$OPCTL" get -t operator -a
"$OPCTL" get -t resource -w public -a
cat <<MSG

The control plane is running, with an Azure Data Factory pipeline run under way. You are the
admin (key in $ORCHESTRATOR_ADMIN_APIKEY_FILE); the examples are owned by the seed's users,
so lists need -a. In a browser: $OPCTL_SERVER/ui/ (sign in with the admin key,
$(cat "$ORCHESTRATOR_ADMIN_APIKEY_FILE")). Or try:
  export OPCTL_SERVER=$OPCTL_SERVER OPCTL_APIKEY=\$(cat $ORCHESTRATOR_ADMIN_APIKEY_FILE) PATH=\$PWD/$BIN:\$PATH
  opctl get -t resource -w public -a                    # RUNTIME goes inprogress → succeeded
  opctl get -t resource -w public -n pipeline-run-1 -d  # the run and its activities, live
  opctl get -t operator -n adf-operator -d              # its replicas, run by the orchestrator
  opctl logs -n adf-operator                            # what they wrote
  opctl scale -n adf-operator -c adf-controller -r 3
  opctl delete -t resource -w public -n pipeline-run-1
  bash deploy/quickstart.sh stop
MSG
