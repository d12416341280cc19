#!/usr/bin/env bash
# IMS Broker vs mosquitto on this machine, same scenarios, interleaved (issue 6).
#
#   tools/bench-vs-mosquitto.sh            # full table, under 10 minutes
#   STORE=memory tools/bench-vs-mosquitto.sh
#   ONLY="p2p-q1-fixed fanin-q0-fixed" DURATION=5 tools/bench-vs-mosquitto.sh
#
# Environment:
#   STORE=sqlite|memory   our broker's store (default sqlite: durable, group commit)
#   SYNC=full|normal      SQLite synchronous mode (default: the broker's default)
#   DURATION=10           measured seconds per run
#   WARMUP=2              seconds of load before each run is measured
#   JIT_WARMUP=20         seconds of unmeasured p2p and group load on IMS Broker before the first row (0 = none)
#   CONNECTIONS=20000     idle connections for the connect scenario
#   ONLY="names"          run only these rows (names as printed in the table)
#   OUT=dir               where logs and JSON lines go (default: a new temp dir)
#   IMS_ENV="K=v ..."     extra environment for our broker only (A/B runs of runtime settings)
#   BROKER_DLL=path       our broker's Broker.dll (default: the Release build; e.g. a ReadyToRun publish output)
#   MOSQ_INFLIGHT=20      mosquitto's max_inflight_messages (default: its own default, 20; ours is 100)
#
# Everything listens on 127.0.0.1 only; everything started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STORE="${STORE:-sqlite}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
JIT_WARMUP="${JIT_WARMUP:-20}"
CONNECTIONS="${CONNECTIONS:-20000}"
ONLY="${ONLY:-}"
OUT="${OUT:-$(mktemp -d /tmp/ims-bench.XXXXXX)}"
mkdir -p "$OUT"
PASSWORD="bench-pass"
USERS=10

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Idle connections need file descriptors, in the load generator and in each broker (they inherit
# this shell's limit): raise the soft limit to the hard one. A container may cap the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNECTIONS + 500)) ]; then
  CONNECTIONS=$(( $(ulimit -n) - 500 ))
  log "open-files limit $(ulimit -n): connect scenario lowered to $CONNECTIONS connections"
fi

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  log "installing mosquitto (apt)"
  if [ "$(id -u)" = 0 ]; then APT=(apt-get); else APT=(sudo apt-get); fi
  "${APT[@]}" update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq mosquitto >/dev/null
fi
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

log "building (Release)"
dotnet build -c Release src/Broker -v q -nologo >"$OUT/build-broker.log" 2>&1 || { cat "$OUT/build-broker.log"; exit 1; }
dotnet build -c Release tools/Broker.Bench -v q -nologo >"$OUT/build-bench.log" 2>&1 || { cat "$OUT/build-bench.log"; exit 1; }
BROKER_DLL="${BROKER_DLL:-$ROOT/src/Broker/bin/Release/net10.0/Broker.dll}"
BENCH=(dotnet "$ROOT/tools/Broker.Bench/bin/Release/net10.0/Broker.Bench.dll")

# shellcheck source=tools/lib.sh
source "$ROOT/tools/lib.sh"

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

PIDS=()
trap_cleanup_pids

# --- mosquitto ---------------------------------------------------------------------------------
MOSQ_PORT="$(free_port)"
cat >"$OUT/mosquitto.conf" <<EOF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 1000
max_inflight_messages ${MOSQ_INFLIGHT:-20}
max_connections -1
persistence false
log_dest stderr
EOF
"$MOSQUITTO" -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
MOSQ_PID=$!
PIDS+=("$MOSQ_PID")
wait_port "$MOSQ_PORT" 10 || { cat "$OUT/mosquitto.log"; log "mosquitto did not start"; exit 1; }
log "mosquitto $("$MOSQUITTO" -h 2>/dev/null | head -1 | awk '{print $3}') pid $MOSQ_PID on 127.0.0.1:$MOSQ_PORT"

# --- IMS Broker --------------------------------------------------------------------------------
IMS_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
DATA="$OUT/data"
HASH="$(printf '%s\n' "$PASSWORD" | dotnet "$BROKER_DLL" hash-password | tail -1)"
ENV=(
  ASPNETCORE_ENVIRONMENT=Production DOTNET_ENVIRONMENT=Production
  Broker__Mqtt__Host=127.0.0.1 Broker__Mqtt__Port="$IMS_PORT" Broker__Http__Port="$HTTP_PORT"
  Broker__DataPath="$DATA" Broker__Store__Type="$STORE"
  Broker__Groups__0__Id=benchgrp
  # A benchmark measures the broker, not contract §13's per-user limits (20 publishes/s, 20 devices for role user).
  Broker__Limits__Roles__user__PublishRate=0 Broker__Limits__Roles__user__PublishBytesRate=0 Broker__Limits__Roles__user__MaxDevices=0
  # Every bench connection comes from 127.0.0.1: 19,000 connects at 2,000/s is the connect flood from one source that
  # Broker:Limits:ConnectRatePerSource (50/s) refuses by design. mosquitto has no such limit; the connect row measures the broker.
  Broker__Limits__ConnectRatePerSource=0
  # Presence (contract §10) republishes a user's device list on every connect: with 19,000 connections on 10 bench users
  # (1,900 devices each, where the default Broker:Limits:Roles:user:MaxDevices is 20) that is 1,900 client ids encoded per
  # connect, work no real user shape causes and mosquitto does not do. The connect row measures connections.
  Broker__Presence__Enabled=false
)
[ -n "${SYNC:-}" ] && ENV+=(Broker__Store__Synchronous="$SYNC")
# IMS_ENV="NAME=value ..." adds environment variables to our broker only (A/B experiments).
# shellcheck disable=SC2206
[ -n "${IMS_ENV:-}" ] && ENV+=($IMS_ENV)
for ((i = 0; i < USERS; i++)); do
  ENV+=("Broker__Users__${i}__Name=bench$i" "Broker__Users__${i}__PasswordHash=$HASH" "Broker__Users__${i}__Role=user"
        "Broker__Groups__0__Members__${i}=bench$i")
done
ENV+=("Broker__Users__${USERS}__Name=bench-svc" "Broker__Users__${USERS}__PasswordHash=$HASH" "Broker__Users__${USERS}__Role=service")
env "${ENV[@]}" dotnet "$BROKER_DLL" >"$OUT/ims.log" 2>&1 &
IMS_PID=$!
PIDS+=("$IMS_PID")
wait_listening "$OUT/ims.log" "$IMS_PID" 30 || exit 1
log "IMS Broker pid $IMS_PID on 127.0.0.1:$IMS_PORT (store $STORE, data $DATA)"

# --- runs --------------------------------------------------------------------------------------
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

# name, then bench arguments
ROWS=(
  "p2p-q1-fixed|p2p --qos 1 --clients 50 --rate 5000"
  "fanin-q0-fixed|fanin --qos 0 --clients 50 --rate 20000"
  "fanin-q0-sat|fanin --qos 0 --clients 50"
  "fanin-q1-sat|fanin --qos 1 --clients 4"
  "p2p-q1-sat|p2p --qos 1 --clients 50"
  "group-q0-sat|group --qos 0 --clients 100"
  "group-q1-sat|group --qos 1 --clients 100"
)
# Last, after the sweeps: 20,000 connections leave each broker with a larger heap.
CONNECT_ROW="connect|connect --clients $CONNECTIONS --rate 2000"

# Sustained throughput: the highest of these fixed rates (total publishes/s) that a broker delivers
# with >= 99 % of the messages arriving, p99 <= 100 ms and, at QoS 1, no acknowledged message lost,
# in 4-second runs (and that the load generator really sent: >= 97 % of the rate; above that the
# generator, not the broker, is the limit). "As fast as possible" (the -sat rows) on two shared
# cores often measures the load generator instead: a broker that reads publishers faster leaves
# less CPU to the generator's own subscribers, whose queues then overflow (a full queue drops its
# oldest, engine invariant 6), so the QoS 1 sweeps are the saturation figures without loss.
SWEEPS=(
  "fanin-q0-sweep|fanin --qos 0 --clients 50|40000 60000 80000 100000 120000 160000"
  "group-q0-sweep|group --qos 0 --clients 100|600 800 1000 1200 1600 2000"
  "p2p-q1-sweep|p2p --qos 1 --clients 50|5000 10000 15000 20000 25000 30000"
  "group-q1-sweep|group --qos 1 --clients 100|150 300 450 600 750 900"
)

run_one() { # broker name args...
  local broker="$1" name="$2"; shift 2
  local port pid extra=()
  if [ "$broker" = mosquitto ]; then port="$MOSQ_PORT"; pid="$MOSQ_PID"; extra=(--mosquitto); else port="$IMS_PORT"; pid="$IMS_PID"; fi
  local dur="$DURATION"
  [ "$1" = connect ] && dur=25 # held idle this long before RSS is read: the broker's idle collection (Broker:Memory:IdleCollect) has run
  log "$name on $broker"
  local dropped0=""
  [ "$broker" = ims ] && dropped0="$(ims_dropped)"
  if ! "${BENCH[@]}" "$@" --host 127.0.0.1 --port "$port" --duration "$dur" --warmup "$WARMUP" --users "$USERS" --user-prefix bench \
        --password "$PASSWORD" --broker-pid "$pid" --label "$name" "${extra[@]}" >"$OUT/$name-$broker.txt" 2>&1; then
    log "  (run reported a problem, see $OUT/$name-$broker.txt)"
  fi
  if [ -n "$dropped0" ]; then
    # Drops are by design (a full queue drops its oldest, engine invariant 6); a loss the bench reports should match them.
    echo "  broker dropped $(( $(ims_dropped) - dropped0 )) messages in this run (queue full or expired; ims_broker_messages_dropped)" >>"$OUT/$name-$broker.txt"
  fi
  grep '^{"scenario"' "$OUT/$name-$broker.txt" >>"$RESULTS" || true
  sed 's/^/    /' "$OUT/$name-$broker.txt" | grep -v '^    {' >&2 || true
}

ims_dropped() { curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk '/^ims_broker_messages_dropped /{printf "%d\n", $2; found=1} END{if (!found) print 0}'; }

START=$SECONDS
# A fresh .NET process compiles its hot paths again, optimised, during its first seconds under load (tiered
# compilation): measured right after start, the first row counted up to 40 % of the broker's CPU in the JIT.
# A broker runs for days, so the table compares steady states: unmeasured load first (mosquitto needs none).
if [ "$JIT_WARMUP" -gt 0 ]; then
  log "JIT warm-up: ${JIT_WARMUP} s of unmeasured load on IMS Broker"
  for args in "p2p --qos 1 --clients 50 --rate 5000" "group --qos 0 --clients 100 --rate 500"; do
    # shellcheck disable=SC2086
    "${BENCH[@]}" $args --host 127.0.0.1 --port "$IMS_PORT" --duration $((JIT_WARMUP / 2)) --warmup 0 --users "$USERS" --user-prefix bench \
      --password "$PASSWORD" --label warmup >"$OUT/jit-warmup.txt" 2>&1 || log "  (warm-up run reported a problem, see $OUT/jit-warmup.txt)"
  done
fi
n=0
for row in "${ROWS[@]}"; do
  name="${row%%|*}"
  args="${row#*|}"
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
  # Interleaved, alternating which broker goes first.
  # shellcheck disable=SC2086
  if ((n % 2 == 0)); then run_one mosquitto "$name" $args; run_one ims "$name" $args
  else run_one ims "$name" $args; run_one mosquitto "$name" $args; fi
  n=$((n + 1))
done
# sweep_one broker name "args" "rates": runs each rate until one is not sustained; records the best.
sweep_one() {
  local broker="$1" name="$2" args="$3" rates="$4" port pid extra=() rate best=""
  if [ "$broker" = mosquitto ]; then port="$MOSQ_PORT"; pid="$MOSQ_PID"; extra=(--mosquitto); else port="$IMS_PORT"; pid="$IMS_PID"; fi
  for rate in $rates; do
    log "$name on $broker at $rate/s"
    # shellcheck disable=SC2086
    "${BENCH[@]}" $args --rate "$rate" --host 127.0.0.1 --port "$port" --duration 4 --users "$USERS" --user-prefix bench \
      --password "$PASSWORD" --broker-pid "$pid" --label "$name" "${extra[@]}" >"$OUT/$name-$broker-$rate.txt" 2>&1 || true
    local line
    line="$(grep '^{"scenario"' "$OUT/$name-$broker-$rate.txt" || true)"
    if [ -z "$line" ] || ! python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["expected"] and r["published"] >= 0.97 * float(sys.argv[2]) * r["duration"] and r["received"] >= 0.99 * r["expected"] and r["p99_ms"] <= 100 and (r["qos"] == 0 or r["lost"] == 0) else 1)' "$line" "$rate"; then
      break
    fi
    best="$line"
  done
  if [ -n "$best" ]; then printf '%s\n' "$best" >>"$RESULTS"; fi
  log "  $name on $broker: highest sustained rate $(printf '%s' "$best" | python3 -c 'import json,sys; t=sys.stdin.read(); print(json.loads(t)["rate"] if t.strip() else "none")')"
}

for row in "${SWEEPS[@]}"; do
  IFS='|' read -r name args rates <<<"$row"
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
  if ((n % 2 == 0)); then sweep_one mosquitto "$name" "$args" "$rates"; sweep_one ims "$name" "$args" "$rates"
  else sweep_one ims "$name" "$args" "$rates"; sweep_one mosquitto "$name" "$args" "$rates"; fi
  n=$((n + 1))
done

name="${CONNECT_ROW%%|*}"
args="${CONNECT_ROW#*|}"
if [ -z "$ONLY" ] || [[ " $ONLY " == *" $name "* ]]; then
  # shellcheck disable=SC2086
  if ((n % 2 == 0)); then run_one mosquitto "$name" $args; run_one ims "$name" $args
  else run_one ims "$name" $args; run_one mosquitto "$name" $args; fi
fi
log "runs took $((SECONDS - START)) s; raw results in $RESULTS"
# The broker's own counters for the whole session (store commits, changes written and elided, drops).
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" >"$OUT/ims-metrics.txt" 2>/dev/null || true
grep -E '^ims_broker_store_(commits|operations|elided)' "$OUT/ims-metrics.txt" >&2 || true

python3 - "$RESULTS" "$STORE" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["label"], {})[r["broker"]] = r
def fmt(v, unit=""):
    if v is None: return "-"
    if isinstance(v, float) and v >= 1000: return f"{v:,.0f}{unit}"
    return f"{v:.3g}{unit}" if isinstance(v, float) else f"{v}{unit}"
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b not in (None, 0) else "-"
print(f"\nIMS Broker (store {sys.argv[2]}) vs mosquitto, ratio = ours / mosquitto\n")
print(f"| {'run':<15} | {'metric':<22} | {'mosquitto':>11} | {'IMS Broker':>11} | {'ratio':>6} |")
print(f"|{'-'*17}|{'-'*24}|{'-'*13}|{'-'*13}|{'-'*8}|")
def line(name, metric, m, o):
    print(f"| {name:<15} | {metric:<22} | {fmt(m):>11} | {fmt(o):>11} | {ratio(o, m):>6} |")
for name, pair in by.items():
    m, o = pair.get("mosquitto", {}), pair.get("ims", {})
    g = lambda r, k: r.get(k)
    if name == "connect":
        line(name, "conns/s", g(m, "msgs_per_s"), g(o, "msgs_per_s"))
        line(name, "bytes per idle conn", g(m, "bytes_per_conn"), g(o, "bytes_per_conn"))
        line(name, "connections held", g(m, "received"), g(o, "received"))
        line(name, "connect p99 ms", g(m, "p99_ms"), g(o, "p99_ms"))
        continue
    if name.endswith("-sweep"):
        line(name, "sustained msgs/s", g(m, "msgs_per_s"), g(o, "msgs_per_s"))
        line(name, "broker CPU % there", g(m, "cpu_pct"), g(o, "cpu_pct"))
        line(name, "p99 ms there", g(m, "p99_ms"), g(o, "p99_ms"))
        if g(o, "qos") and g(o, "qos") > 0:
            line(name, "acked but lost there", g(m, "lost"), g(o, "lost"))
        continue
    if m.get("rate") or o.get("rate"):
        per = lambda r: (r["cpu_pct"] / 100 / r["msgs_per_s"] * 1e6) if r.get("cpu_pct") is not None and r.get("msgs_per_s") else None
        line(name, "msgs/s delivered", g(m, "msgs_per_s"), g(o, "msgs_per_s"))
        line(name, "broker CPU %", g(m, "cpu_pct"), g(o, "cpu_pct"))
        line(name, "CPU µs per msg", per(m), per(o))
        line(name, "p50 ms", g(m, "p50_ms"), g(o, "p50_ms"))
        line(name, "p99 ms", g(m, "p99_ms"), g(o, "p99_ms"))
    else:
        line(name, "msgs/s delivered", g(m, "msgs_per_s"), g(o, "msgs_per_s"))
        line(name, "p99 ms", g(m, "p99_ms"), g(o, "p99_ms"))
        line(name, "broker CPU %", g(m, "cpu_pct"), g(o, "cpu_pct"))
    if g(o, "qos") and g(o, "qos") > 0:
        line(name, "acked but lost", g(m, "lost"), g(o, "lost"))
    line(name, "broker RSS MiB", (g(m, "rss_kib") or 0) / 1024.0, (g(o, "rss_kib") or 0) / 1024.0)
EOF
