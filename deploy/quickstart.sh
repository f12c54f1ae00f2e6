#!/usr/bin/env bash
# One command from a fresh clone to a running control plane: builds the binaries, starts NATS
# with JetStream (unless NATS_URL points at one), the orchestrator and the demo operator's
# component, applies the demo operator and a demo job, and shows them with opctl.
#
#   bash deploy/quickstart.sh          start everything (state in .data/)
#   bash deploy/quickstart.sh stop     stop what it started
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${QUICKSTART_DATA:-.data}
BIN=target/release
mkdir -p "$DATA"

stop() {
  for name in component orchestrator nats; do
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

"$BIN/opctl" apply -f deploy/examples/demo-operator.yaml
OPERATOR_NAME=demo OPERATOR_STATE_STORE_TYPE=jetstream_kv start_bg component "$BIN/demo-operator"
"$BIN/opctl" apply -f deploy/examples/demo-job.yaml -w public
"$BIN/opctl" get -t operator
"$BIN/opctl" get -t resource -w public
cat <<MSG

The control plane is running. Try:
  export OPCTL_SERVER=$OPCTL_SERVER PATH=\$PWD/$BIN:\$PATH
  opctl get -t resource -w public                  # STATUS and RUNTIME as the job runs
  opctl get -t resource -w public -n hello-job -d  # live details from the component
  opctl delete -t resource -w public -n hello-job
  bash deploy/quickstart.sh stop
MSG
