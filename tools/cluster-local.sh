#!/usr/bin/env bash
# A three-node cluster on this machine, without Docker, for trying cluster mode (docs/cluster.md):
# one redis-server on 127.0.0.1 (AOF, fsync always) and three broker processes n1, n2, n3 in the
# Development environment (the demo users alice, bob, carol, assistant, admin and group Group123),
# each with Broker:Cluster:Redis pointing at that redis-server.
#
#   tools/cluster-local.sh              # builds src/Broker (Debug), starts everything, waits
#   NO_BUILD=1 tools/cluster-local.sh   # skips the build (src/Broker/bin/Debug/net10.0 must be there)
#
#   node   MQTT over TCP     HTTP (ws://.../mqtt, /readyz, /metrics, /api)
#   n1     127.0.0.1:1883    http://127.0.0.1:8080
#   n2     127.0.0.1:1884    http://127.0.0.1:8081
#   n3     127.0.0.1:1885    http://127.0.0.1:8082
#   redis  127.0.0.1:6379
#
# Environment:
#   REDIS_PORT=6379   the redis-server's port
#   MQTT_PORT=1883    n1's MQTT port; n2 and n3 take the next two
#   HTTP_PORT=8080    n1's HTTP port; n2 and n3 take the next two
#   DIR=dir           where the Redis data, the nodes' data directories and the logs go (default: a
#                     new temp dir). Give the same DIR again to start on the state of an earlier run.
#   NO_BUILD=1        do not build first
#
# Runs until Ctrl-C (or until one of the processes exits); then stops the nodes (SIGTERM: the broker's
# clean shutdown) and the redis-server. Logs and data stay in DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=tools/lib.sh
source "$ROOT/tools/lib.sh"

REDIS_PORT="${REDIS_PORT:-6379}"
MQTT_PORT="${MQTT_PORT:-1883}"
HTTP_PORT="${HTTP_PORT:-8080}"
DIR="${DIR:-$(mktemp -d -t ims-cluster-XXXXXX)}"
DIR="$(mkdir -p "$DIR" && cd "$DIR" && pwd)"
NODES=(n1 n2 n3)
BROKER_DLL="$ROOT/src/Broker/bin/Debug/net10.0/Broker.dll"

log() { echo "cluster-local: $*"; }
fail() { echo "cluster-local: $*" >&2; exit 1; }

if ! command -v redis-server >/dev/null 2>&1; then
  fail "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)"
fi

# in_use PORT: something already listens on 127.0.0.1:PORT.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "$REDIS_PORT" \
            "$MQTT_PORT" "$((MQTT_PORT + 1))" "$((MQTT_PORT + 2))" \
            "$HTTP_PORT" "$((HTTP_PORT + 1))" "$((HTTP_PORT + 2))"; do
  if in_use "$port"; then
    fail "port $port on 127.0.0.1 is in use (a broker or redis-server already running?); see the port settings at the top of $0"
  fi
done

if [[ -z "${NO_BUILD:-}" ]]; then
  log "building src/Broker (Debug)"
  dotnet build "$ROOT/src/Broker" -v q -nologo >"$DIR/build.log" 2>&1 || { cat "$DIR/build.log" >&2; fail "the build failed"; }
fi
[[ -f "$BROKER_DLL" ]] || fail "$BROKER_DLL is missing: build first (dotnet build src/Broker) or run without NO_BUILD"

PIDS=()        # every process started here, redis-server first
NODE_PIDS=()

# stop_pid PID SECONDS: SIGTERM, then SIGKILL if it is still there after SECONDS.
stop_pid() {
  local pid="$1" tenths=$(( $2 * 10 )) i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < tenths; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "cluster-local: pid $pid did not stop within $2 s: kill -9" >&2
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  trap '' INT TERM
  local pid
  if ((${#PIDS[@]} > 0)); then
    log "stopping"
    # The nodes first (their clean shutdown still writes to Redis), then Redis.
    for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid" 15; done
    stop_pid "${PIDS[0]}" 15
    log "stopped; logs and data are in $DIR"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- redis-server ----------------------------------------------------------------------------------
# AOF with an fsync before every reply (an acknowledged message is on disk), no RDB snapshots.
# Every process runs in its own session (setsid), out of reach of the terminal's Ctrl-C: the trap
# stops them, nodes first.
mkdir -p "$DIR/redis"
setsid redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DIR/redis" \
  --appendonly yes --appendfsync always --save '' \
  --daemonize no --logfile "$DIR/redis.log" &
PIDS+=("$!")

redis_up=
for ((i = 0; i < 100; i++)); do
  if [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)" == PONG ]]; then redis_up=1; break; fi
  kill -0 "${PIDS[0]}" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$redis_up" ]] || { cat "$DIR/redis.log" >&2 || true; fail "redis-server did not start"; }
log "redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') pid ${PIDS[0]} on 127.0.0.1:$REDIS_PORT (AOF in $DIR/redis)"

# --- broker nodes -----------------------------------------------------------------------------------
for i in "${!NODES[@]}"; do
  node="${NODES[$i]}"
  mkdir -p "$DIR/$node"
  env ASPNETCORE_ENVIRONMENT=Development DOTNET_ENVIRONMENT=Development \
    Broker__Mqtt__Host=127.0.0.1 \
    Broker__Mqtt__Port="$((MQTT_PORT + i))" \
    Broker__Http__Port="$((HTTP_PORT + i))" \
    Broker__DataPath="$DIR/$node/data" \
    Broker__Cluster__Redis="127.0.0.1:$REDIS_PORT" \
    Broker__Cluster__NodeId="$node" \
    setsid dotnet "$BROKER_DLL" >"$DIR/$node.log" 2>&1 &
  PIDS+=("$!")
  NODE_PIDS+=("$!")
done

for i in "${!NODES[@]}"; do
  wait_listening "$DIR/${NODES[$i]}.log" "${NODE_PIDS[$i]}" 60 || fail "node ${NODES[$i]} did not start (log: $DIR/${NODES[$i]}.log)"
  log "node ${NODES[$i]} pid ${NODE_PIDS[$i]}: mqtt://127.0.0.1:$((MQTT_PORT + i)), http://127.0.0.1:$((HTTP_PORT + i)) (log: $DIR/${NODES[$i]}.log)"
done

cat <<EOF

The cluster is up. Demo users (Development): alice, bob, carol (role user), assistant (service),
admin (admin); password <name>-pass; group Group123 = alice, bob. Client ids: GID_IMS@@@<device>.

Bob listens on n2:

  mosquitto_sub -h 127.0.0.1 -p $((MQTT_PORT + 1)) -i 'GID_IMS@@@bob-phone' -u bob -P bob-pass -c -t 'IMS/bob/Inbox/#' -t 'IMS/Group123/#' -q 1 -v

Alice writes to his inbox and to the group on n1:

  mosquitto_pub -h 127.0.0.1 -p $MQTT_PORT -i 'GID_IMS@@@alice-phone' -u alice -P alice-pass -t 'IMS/bob/Inbox/Msg/alice' -m 'hello from n1' -q 1
  mosquitto_pub -h 127.0.0.1 -p $MQTT_PORT -i 'GID_IMS@@@alice-phone' -u alice -P alice-pass -t 'IMS/Group123/alice' -m 'hello group' -q 1

Stop bob's mosquitto_sub, publish again, then start it on n3 (-p $((MQTT_PORT + 2))): his persistent
session (-c) gets what was sent while he was away.

Readiness and metrics of each node: curl http://127.0.0.1:$HTTP_PORT/readyz (and :$((HTTP_PORT + 1)), :$((HTTP_PORT + 2))), /metrics.
Redis: redis-cli -p $REDIS_PORT
Logs: $DIR/{n1,n2,n3,redis}.log

Ctrl-C stops everything.
EOF

# Until Ctrl-C, or until one of the processes exits on its own.
set +e
wait -n "${PIDS[@]}"
status=$?
set -e
for i in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    if ((i == 0)); then fail "redis-server exited (status $status; log: $DIR/redis.log)"; fi
    fail "node ${NODES[$((i - 1))]} exited (status $status; log: $DIR/${NODES[$((i - 1))]}.log)"
  fi
done
fail "a process exited (status $status)"
