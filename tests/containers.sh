#!/usr/bin/env bash
# The whole system in containers, end to end, on this machine's Docker engine (no registry):
# builds every image (deploy/build-images.sh), starts deploy/compose.yaml under a project of its
# own, applies the seed's secret, operator and pipeline run with opctl and sees the run go
# active then succeeded, scales the ADF component from 2 to 3 replicas, kills the replica that
# leads while a second run is in progress and sees that run complete exactly once, then
# `compose down` and checks that nothing is left. Then the cluster (deploy/compose.cluster.yaml:
# three NATS nodes, two orchestrator replicas): a pipeline run in progress survives the kill of a
# NATS node and of the leading orchestrator, and runs exactly once.
#
#   bash tests/containers.sh
#
# Bounded by CONTAINER_TEST_TIMEOUT_S (default 1500 s, image build included); whatever
# happens, it removes what it started. Without a Docker engine it says so and exits 0.
# SKIP_IMAGE_BUILD=1 uses the images as they are; BINARY_PROFILE=debug puts the debug build in
# them (deploy/build-images.sh), as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_FILE=${COMPOSE_FILE:-deploy/compose.yaml}
# The opctl of the build the images carry (deploy/build-images.sh, BINARY_PROFILE).
OPCTL_BIN=$PWD/target/${BINARY_PROFILE:-release}/opctl
CLUSTER_COMPOSE_FILE=deploy/compose.cluster.yaml
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  COMPOSE=(docker-compose)
fi

say() { echo "[containers] $*" >&2; }

# The host port Docker published for a service's container port (the compose files publish on
# any free port when the port variable is empty, so no port is picked here and bound later).
published_port() { # service container-port
  local address
  address=$(compose port "$1" "$2") || return 1
  [ -n "$address" ] || return 1
  echo "${address##*:}"
}

# --- the steps, run bounded in time by the outer part below -----------------------------------
if [ "${1:-}" = "--steps" ] || [ "${1:-}" = "--cluster-steps" ]; then
  PASSED=0
  check() { # description command... : the command must succeed
    local what=$1; shift
    if "$@"; then
      PASSED=$((PASSED + 1))
      say "ok: $what"
    else
      say "FAILED: $what"
      exit 1
    fi
  }
  wait_until() { # seconds description command...
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        say "FAILED: $what (not within ${limit}s)"
        exit 1
      fi
      sleep 1
    done
    PASSED=$((PASSED + 1))
    say "ok: $what"
  }
  compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }
  opctl() { "$OPCTL_BIN" "$@"; }
  # A field of an opctl JSON answer, by a Python expression on `d`.
  field() { # expression opctl-args...
    local expression=$1; shift
    opctl "$@" -o json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print($expression)"
  }
  run_field() { # name expression
    field "$2" get -t resource -w public -n "$1"
  }
  running_replicas() { # count
    [ "$(docker ps -q --filter "label=io.operator.orchestrator=$PROJECT" --filter status=running | wc -l)" -eq "$1" ] &&
      [ "$(field "sum(1 for r in d['details']['components']['replicas'] if r['state'] == 'running')" \
        get -t operator -n adf-operator -d)" -eq "$1" ]
  }
  standin_runs() { # pipeline
    curl -fsS "http://127.0.0.1:$ADF_STANDIN_PORT/_standin/runs" |
      python3 -c "import json,sys; print(sum(1 for r in json.load(sys.stdin)['runs'] if r['pipelineName'] == '$1'))"
  }
  runtime_is() { [ "$(run_field "$1" "d.get('runtime')")" = "$2" ]; }
  status_is() { [ "$(run_field "$1" "d.get('status')")" = "$2" ]; }
  # The container of the replica that leads: the election's lease holder (each replica's
  # ELECTION_REPLICA_ID is its container's name), else the one whose log shows it started
  # the run of `pipeline`.
  leader_of() { # pipeline
    local leader
    leader=$(field "(d.get('details') or {}).get('election', {}).get('adf-controller', {}).get('leader') or ''" \
      get -t operator -n adf-operator -d || true)
    if [ -n "$leader" ] && docker inspect "$leader" >/dev/null 2>&1; then
      say "leader from the election: $leader"
      echo "$leader"
      return
    fi
    for c in $(docker ps --format '{{.Names}}' --filter "label=io.operator.orchestrator=$PROJECT"); do
      if docker logs "$c" 2>&1 | grep -q "creating the pipeline run.*$1\|$1.*creating the pipeline run"; then
        say "no election details; the replica that started the run: $c"
        echo "$c"
        return
      fi
    done
    return 1
  }
  # A stand-in pipeline that runs `ms` milliseconds, and a run of it named `name`.
  long_run() { # name pipeline ms
    curl -fsS -X PUT -H 'content-type: application/json' \
      -d "{\"outcome\": \"succeed\", \"runMs\": $3}" \
      "http://127.0.0.1:$ADF_STANDIN_PORT/_standin/pipelines/$2" -o /dev/null &&
      sed -e "s/^name: pipeline-run-1$/name: $1/" \
        -e "s/pipelineName: ArmtemplateSampleCopyPipeline/pipelineName: $2/" \
        deploy/examples/adf-pipeline-run.yaml >"$WORK/$1.yaml"
  }
fi

if [ "${1:-}" = "--cluster-steps" ]; then
  started=$SECONDS
  say "cluster: compose up (project $PROJECT)"
  compose up -d
  OPERATOR_API_PORT=$(published_port orchestrator-1 7700)
  OPERATOR_API_PORT_2=$(published_port orchestrator-2 7700)
  ADF_STANDIN_PORT=$(published_port adf-standin 7800)
  say "ports: orchestrator-1 $OPERATOR_API_PORT, orchestrator-2 $OPERATOR_API_PORT_2, stand-in $ADF_STANDIN_PORT"
  export OPCTL_SERVER="http://127.0.0.1:$OPERATOR_API_PORT,http://127.0.0.1:$OPERATOR_API_PORT_2"
  # An orchestrator that exits (it could not fence the store while a node was down, say) is
  # started again by its restart policy and published on a new port: read the ports again.
  refresh_ports() {
    local port
    if port=$(published_port orchestrator-1 7700 2>/dev/null); then OPERATOR_API_PORT=$port; fi
    if port=$(published_port orchestrator-2 7700 2>/dev/null); then OPERATOR_API_PORT_2=$port; fi
    export OPCTL_SERVER="http://127.0.0.1:$OPERATOR_API_PORT,http://127.0.0.1:$OPERATOR_API_PORT_2"
  }
  opctl() { refresh_ports; "$OPCTL_BIN" "$@"; }
  admin_key() { compose exec -T orchestrator-1 cat /var/lib/orchestrator/admin.apikey 2>/dev/null; }
  wait_until 120 "orchestrator-1 has made the admin's key" admin_key
  OPCTL_APIKEY=$(admin_key | tr -d '[:space:]')
  export OPCTL_APIKEY
  # The replica whose /readyz answers 200.
  leading_orchestrator() {
    refresh_ports
    if curl -fsS "http://127.0.0.1:$OPERATOR_API_PORT/readyz" >/dev/null 2>&1; then
      echo orchestrator-1
    elif curl -fsS "http://127.0.0.1:$OPERATOR_API_PORT_2/readyz" >/dev/null 2>&1; then
      echo orchestrator-2
    else
      return 1
    fi
  }
  follower_answers() { curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$OPERATOR_API_PORT_2/readyz" | grep -qx 503; }
  wait_until 120 "orchestrator-1 leads" curl -fsS "http://127.0.0.1:$OPERATOR_API_PORT/readyz"
  wait_until 120 "orchestrator-2 follows" follower_answers
  check "a request to the follower is forwarded to the leader" \
    "$OPCTL_BIN" --server "http://127.0.0.1:$OPERATOR_API_PORT_2" get -t operator

  check "the seed's secret is applied" opctl apply -f deploy/examples/adf-secret.yaml -w user-system
  check "the seed's operator is applied" opctl apply -f deploy/examples/adf-operator.yaml
  wait_until 180 "the leader runs 2 ADF replicas as containers" running_replicas 2
  check "the stand-in runs ClusterCopyPipeline for 30 s" long_run pipeline-run-3 ClusterCopyPipeline 30000
  check "pipeline-run-3 is applied" opctl apply -f "$WORK/pipeline-run-3.yaml" -w public
  wait_until 120 "pipeline-run-3 is in progress" runtime_is pipeline-run-3 inprogress
  leader=$(leading_orchestrator) || { say "FAILED: no orchestrator leads"; exit 1; }
  check "a NATS node (nats-2) is killed mid-run" compose kill nats-2
  check "the leading orchestrator ($leader) is killed mid-run" compose kill "$leader"
  wait_until 240 "pipeline-run-3 succeeded after a NATS node and the leading orchestrator died" \
    runtime_is pipeline-run-3 succeeded
  check "Azure (the stand-in) ran pipeline-run-3 exactly once" [ "$(standin_runs ClusterCopyPipeline)" -eq 1 ]
  survivor=orchestrator-1
  [ "$leader" = orchestrator-1 ] && survivor=orchestrator-2
  check "the other orchestrator ($survivor) leads" [ "$(leading_orchestrator)" = "$survivor" ]
  opctl get -t operator -n adf-operator -d >&2
  # Replicas hand their components over rather than stop them, so the components outlive
  # every orchestrator: they go once the orchestrators are stopped (a leader would start them
  # again), before the network.
  check "the orchestrators are stopped" compose stop --timeout 30 orchestrator-1 orchestrator-2
  check "the component containers are removed" bash -c \
    "docker rm -f \$(docker ps -aq --filter label=io.operator.orchestrator=$PROJECT) >/dev/null"
  check "compose down" compose down --volumes --timeout 60
  check "no compose container is left" [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ]
  say "cluster passed in $((SECONDS - started))s"
  echo "containers (cluster): $PASSED passed, 0 failed"
  exit 0
fi

if [ "${1:-}" = "--steps" ]; then
  started=$SECONDS
  if [ "${SKIP_IMAGE_BUILD:-}" != 1 ]; then
    bash deploy/build-images.sh
  fi
  say "images ready after $((SECONDS - started))s; compose up (project $PROJECT)"
  compose up -d
  OPERATOR_API_PORT=$(published_port orchestrator 7700)
  ADF_STANDIN_PORT=$(published_port adf-standin 7800)
  say "ports: orchestrator $OPERATOR_API_PORT, stand-in $ADF_STANDIN_PORT"
  export OPCTL_SERVER="http://127.0.0.1:$OPERATOR_API_PORT"
  admin_key() { compose exec -T orchestrator cat /var/lib/orchestrator/admin.apikey 2>/dev/null; }
  wait_until 90 "the orchestrator has made the admin's key" admin_key
  OPCTL_APIKEY=$(admin_key | tr -d '[:space:]')
  export OPCTL_APIKEY
  wait_until 90 "the orchestrator answers" opctl get -t operator

  check "the seed's secret is applied" opctl apply -f deploy/examples/adf-secret.yaml -w user-system
  check "the seed's operator is applied" opctl apply -f deploy/examples/adf-operator.yaml
  wait_until 120 "the orchestrator runs 2 ADF replicas as containers" running_replicas 2

  check "the seed's pipeline run is applied" opctl apply -f deploy/examples/adf-pipeline-run.yaml -w public
  wait_until 120 "pipeline-run-1 is active" status_is pipeline-run-1 active
  wait_until 120 "pipeline-run-1 succeeded" runtime_is pipeline-run-1 succeeded
  check "Azure (the stand-in) ran pipeline-run-1 once" [ "$(standin_runs ArmtemplateSampleCopyPipeline)" -eq 1 ]

  check "opctl scale asks for 3 replicas" opctl scale -n adf-operator -c adf-controller -r 3
  wait_until 120 "3 ADF replicas run" running_replicas 3

  # A run long enough to kill its leader in the middle of it.
  check "the stand-in runs LongCopyPipeline for 20 s" long_run pipeline-run-2 LongCopyPipeline 20000
  check "pipeline-run-2 is applied" opctl apply -f "$WORK/pipeline-run-2.yaml" -w public
  wait_until 60 "pipeline-run-2 is in progress" runtime_is pipeline-run-2 inprogress
  leader=$(leader_of LongCopyPipeline) || { say "FAILED: no replica leads"; exit 1; }
  check "the leading container ($leader) is killed mid-run" docker kill "$leader"
  wait_until 180 "pipeline-run-2 succeeded after its leader died" runtime_is pipeline-run-2 succeeded
  check "Azure (the stand-in) ran pipeline-run-2 exactly once" [ "$(standin_runs LongCopyPipeline)" -eq 1 ]
  wait_until 120 "the killed replica is running again" running_replicas 3
  check "opctl logs shows each replica's output" bash -c \
    "$OPCTL_BIN logs -n adf-operator --tail 20 | grep -c '^==> adf-controller-[0-2] <==$' | grep -qx 3"
  check "opctl logs -f follows the containers' output" bash -c \
    "timeout 10 $OPCTL_BIN logs -n adf-operator -f --tail 1 | grep -q '^==> adf-controller-[0-2] <==$'"
  opctl get -t operator -n adf-operator -d >&2

  check "compose down" compose down --volumes --timeout 60
  check "no component container is left" [ -z "$(docker ps -aq --filter "label=io.operator.orchestrator=$PROJECT")" ]
  check "no compose container is left" [ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ]
  check "the network is gone" bash -c "! docker network inspect '$OPERATOR_NETWORK' >/dev/null 2>&1"
  say "passed in $((SECONDS - started))s"
  echo "containers: $PASSED passed, 0 failed"
  exit 0
fi

# --- the outer part: isolation, the time bound and the clean-up -------------------------------
if ! docker info >/dev/null 2>&1; then
  echo "containers: SKIPPED, no Docker engine here (docker info failed); the container test did not run"
  exit 0
fi
export PROJECT=opr-e2e-$$
export COMPOSE_PROJECT_NAME=$PROJECT
export OPERATOR_NETWORK=$PROJECT-net OPERATOR_PREFIX=$PROJECT
# Empty: Docker publishes each on a free host port, read back after `compose up`.
export OPERATOR_API_PORT="" OPERATOR_API_PORT_2="" ADF_STANDIN_PORT=""
export ADF_STANDIN_RUN_MS=${ADF_STANDIN_RUN_MS:-2000}
export WORK
WORK=$(mktemp -d)

cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    say "failed; what was running:"
    "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" ps >&2 || true
    "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" logs --tail 60 orchestrator >&2 || true
    "${COMPOSE[@]}" -p "$PROJECT" -f "$CLUSTER_COMPOSE_FILE" logs --tail 60 orchestrator-1 orchestrator-2 >&2 || true
    for c in $(docker ps -aq --filter "label=io.operator.orchestrator=$PROJECT"); do
      say "--- $(docker inspect -f '{{.Name}}' "$c")"
      docker logs --tail 30 "$c" >&2 || true
    done
  fi
  for file in "$COMPOSE_FILE" "$CLUSTER_COMPOSE_FILE"; do
    "${COMPOSE[@]}" -p "$PROJECT" -f "$file" down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  done
  local left
  left=$(docker ps -aq --filter "label=io.operator.orchestrator=$PROJECT")
  if [ -n "$left" ]; then
    say "removing containers left behind: $(echo $left)"
    docker rm -f $left >/dev/null || true
  fi
  docker network rm "$OPERATOR_NETWORK" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  if [ "$rc" -ne 0 ]; then
    echo "containers: 0 passed, 1 failed"
  fi
  exit "$rc"
}
trap cleanup EXIT

# `timeout` signals the whole process group of the steps (compose, opctl, curl) when time is up.
timeout --kill-after=20 "${CONTAINER_TEST_TIMEOUT_S:-1500}" bash "$0" --steps
COMPOSE_FILE=$CLUSTER_COMPOSE_FILE timeout --kill-after=20 "${CONTAINER_TEST_TIMEOUT_S:-1500}" \
  bash "$0" --cluster-steps
