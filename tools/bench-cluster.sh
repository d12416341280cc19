#!/usr/bin/env bash
# Cluster mode vs one node on this machine (issue 13): cross-node point to point at QoS 1, and what
# Redis holds per parked session and per queued message. docs/performance.md, "Cluster (issue #13)".
#
#   tools/bench-cluster.sh                 # 2 interleaved runs of each, then the Redis memory part
#   RUNS=3 DURATION=10 tools/bench-cluster.sh
#   PART=memory tools/bench-cluster.sh     # only the Redis memory part (PART=rate: only the runs)
#
# Starts, on 127.0.0.1 ports that are free:
#   - one redis-server in a temp dir: --appendonly yes --appendfsync always --save '' (as docs/cluster.md)
#   - "single": one broker node, SQLite store (STORE), as tools/bench-vs-mosquitto.sh starts it
#   - "n1", "n2": two broker nodes with Broker:Cluster:Redis pointing at that redis-server
# all from the Release build of src/Broker, in Production, IM mode (conventions on), the same users,
# group and limits as tools/bench-vs-mosquitto.sh, and the per-address connect rate off (every
# client of the bench comes from 127.0.0.1).
#
# Rate part: p2p --qos 1 --clients 50 --rate 5000 (the "p2p-q1-fixed" row of bench-vs-mosquitto.sh):
# on "single" everyone connects to the one node; on the cluster the 50 publishers connect to n1 and the
# 50 receivers (persistent sessions) to n2, so every message crosses nodes. CPU is summed over n1, n2
# and redis-server for the cluster (per process in the JSON, cpu_pct_each = n1, n2, redis), the one
# process for single. INFO commandstats is reset before each cluster run and saved after it.
#
# Memory part: the rate part's nodes are stopped, Redis is emptied (FLUSHALL), n1 and n2 start again
# in plain mode (Broker:Conventions:Enabled=false); SESSIONS persistent MQTT 5 sessions (expiry 1 h)
# connect to n2, each subscribes at QoS 1 to a topic of its own and disconnects; then MESSAGES QoS 1
# messages of 300 B are published on n1 to them, round robin. used_memory before and after each step.
#
# Environment:
#   RUNS=2            runs of each side in the rate part (interleaved, alternating which goes first)
#   RATES="5000"      publish rates (msgs/s) of the rate part, each run RUNS times per side
#   NODE_ENV="K=v"    environment of every broker node (default: 32 minimum thread-pool workers, see below;
#                     NODE_ENV= turns it off)
#   DURATION=10       measured seconds per run (plus 2 s warm-up)
#   JIT_WARMUP=20     seconds of unmeasured load on both sides before the first run (0 = none)
#   STORE=sqlite      the single node's store
#   SESSIONS=2000     parked sessions in the memory part
#   MESSAGES=10000    queued messages in the memory part
#   PART=all|rate|memory
#   OUT=dir           logs, JSON lines, Redis stats (default: a new temp dir)
#   NO_BUILD=1        use the existing Release builds
#   REDIS_FSYNC=always  Redis appendfsync (everysec: what fsync costs, an A/B experiment)
#   IMS_ENV="K=v ..." extra environment for every broker node (single and cluster)
#   FLOOR=1           also run the floor in the rate part (0 = not): tools/Broker.RedisFloor, what Redis and its
#                     two clients cost per cross-node message with no broker on top (a script that writes the
#                     row and SPUBLISHes it, the receiver's acks removed in one script per receiver and 50 ms),
#                     at the same rate on the same redis-server, once per run next to single and cluster, after
#                     one run without Redis calls that measures the pacing loop's own cost (subtracted)
#   FLOOR_WARMUP=10   unmeasured seconds at the start of each floor run (a new process each time: its JIT)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=tools/lib.sh
source "$ROOT/tools/lib.sh"

RUNS="${RUNS:-2}"
JIT_WARMUP="${JIT_WARMUP:-20}"
DURATION="${DURATION:-10}"
STORE="${STORE:-sqlite}"
SESSIONS="${SESSIONS:-2000}"
MESSAGES="${MESSAGES:-10000}"
PART="${PART:-all}"
OUT="${OUT:-$(mktemp -d /tmp/ims-bench-cluster.XXXXXX)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PASSWORD="bench-pass"
USERS=10
RATES="${RATES:-5000}"
SCENARIO=(p2p --qos 1 --clients 50)
# 32 minimum worker threads (hex 0x20) on every node, single and cluster alike. When the client-id binding
# of a CONNECT was a synchronous Redis call, the bench's bursts of 16 CONNECTs starved the 2 minimum
# threads of a 2-core machine (EVAL timeouts, CONNACK 0x88); bindings are asynchronous now and runs start
# without it (NODE_ENV=), but it stays so that figures remain comparable with the earlier ones.
NODE_ENV="${NODE_ENV-DOTNET_ThreadPool_ForceMinWorkerThreads=20}"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v redis-server >/dev/null 2>&1 || { log "redis-server is not installed (apt-get install redis-server)"; exit 1; }

if [[ -z "${NO_BUILD:-}" ]]; then
  log "building (Release)"
  dotnet build -c Release src/Broker -v q -nologo >"$OUT/build-broker.log" 2>&1 || { cat "$OUT/build-broker.log"; exit 1; }
  dotnet build -c Release tools/Broker.Bench -v q -nologo >"$OUT/build-bench.log" 2>&1 || { cat "$OUT/build-bench.log"; exit 1; }
  dotnet build -c Release tools/Broker.RedisFloor -v q -nologo >"$OUT/build-floor.log" 2>&1 || { cat "$OUT/build-floor.log"; exit 1; }
fi
BROKER_DLL="$ROOT/src/Broker/bin/Release/net10.0/Broker.dll"
BENCH=(dotnet "$ROOT/tools/Broker.Bench/bin/Release/net10.0/Broker.Bench.dll")
FLOOR_TOOL=(dotnet "$ROOT/tools/Broker.RedisFloor/bin/Release/net10.0/Broker.RedisFloor.dll")
FLOOR="${FLOOR:-1}"
FLOOR_WARMUP="${FLOOR_WARMUP:-10}"

PIDS=()
trap_cleanup_pids

# stop_pid PID: SIGTERM (the broker's clean shutdown), SIGKILL after 15 s.
stop_pid() {
  local i
  kill "$1" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# --- Redis -------------------------------------------------------------------------------------
REDIS_FSYNC="${REDIS_FSYNC:-always}"
REDIS_PORT="$(free_port)"
mkdir -p "$OUT/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$OUT/redis" --appendonly yes --appendfsync "$REDIS_FSYNC" --save '' \
  --logfile "$OUT/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
RCLI=(redis-cli -h 127.0.0.1 -p "$REDIS_PORT")
for ((i = 0; i < 100; i++)); do "${RCLI[@]}" ping >/dev/null 2>&1 && break; sleep 0.1; done
"${RCLI[@]}" ping >/dev/null || { cat "$OUT/redis.log"; log "redis-server did not start"; exit 1; }
log "redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2) pid $REDIS_PID on 127.0.0.1:$REDIS_PORT (AOF, appendfsync $REDIS_FSYNC)"

# --- broker nodes ------------------------------------------------------------------------------
HASH="$(printf '%s\n' "$PASSWORD" | dotnet "$BROKER_DLL" hash-password | tail -1)"
BASE_ENV=(
  ASPNETCORE_ENVIRONMENT=Production DOTNET_ENVIRONMENT=Production
  Broker__Mqtt__Host=127.0.0.1
  Broker__Groups__0__Id=benchgrp
  # A benchmark measures the broker, not contract §13's per-user limits; all clients come from 127.0.0.1.
  Broker__Limits__Roles__user__PublishRate=0 Broker__Limits__Roles__user__PublishBytesRate=0 Broker__Limits__Roles__user__MaxDevices=0
  Broker__Limits__ConnectRatePerSource=0
)
for ((i = 0; i < USERS; i++)); do
  BASE_ENV+=("Broker__Users__${i}__Name=bench$i" "Broker__Users__${i}__PasswordHash=$HASH" "Broker__Users__${i}__Role=user"
             "Broker__Groups__0__Members__${i}=bench$i")
done
BASE_ENV+=("Broker__Users__${USERS}__Name=bench-svc" "Broker__Users__${USERS}__PasswordHash=$HASH" "Broker__Users__${USERS}__Role=service")

declare -A PID_OF PORT_OF HTTP_OF
# start_node NAME [ENV...]: a broker on free ports; its pid, MQTT and HTTP port in PID_OF/PORT_OF/HTTP_OF.
start_node() {
  local name="$1"; shift
  local port http
  port="$(free_port)"; http="$(free_port)"
  env "${BASE_ENV[@]}" Broker__Mqtt__Port="$port" Broker__Http__Port="$http" Broker__DataPath="$OUT/data-$name" "$@" \
    dotnet "$BROKER_DLL" >"$OUT/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_listening "$OUT/$name.log" "$pid" 60 || exit 1
  PID_OF[$name]=$pid; PORT_OF[$name]=$port; HTTP_OF[$name]=$http
  log "node $name pid $pid on 127.0.0.1:$port (http $http)"
}
CLUSTER_ENV=(Broker__Cluster__Redis="127.0.0.1:$REDIS_PORT")
# IMS_ENV="NAME=value ..." adds environment variables to every broker node (A/B experiments).
# shellcheck disable=SC2206
[ -n "${IMS_ENV:-}" ] && BASE_ENV+=($IMS_ENV)
# shellcheck disable=SC2206
[ -n "$NODE_ENV" ] && BASE_ENV+=($NODE_ENV)

RESULTS="$OUT/results.jsonl"
FLOORS="$OUT/floor.jsonl"

# --- rate part ---------------------------------------------------------------------------------
run_single() { # run number, rate
  log "run $1 at $2 msgs/s: single node ($STORE)"
  set -- "$2-$1" "$2"
  "${BENCH[@]}" "${SCENARIO[@]}" --rate "$2" --host 127.0.0.1 --port "${PORT_OF[single]}" --duration "$DURATION" --users "$USERS" \
    --user-prefix bench --password "$PASSWORD" --broker-pid "${PID_OF[single]}" --label "single-$1" >"$OUT/single-$1.txt" 2>&1 \
    || log "  (run reported a problem, see $OUT/single-$1.txt)"
  grep '^{"scenario"' "$OUT/single-$1.txt" >>"$RESULTS" || true
  grep -v '^{' "$OUT/single-$1.txt" | sed 's/^/    /' >&2 || true
}
run_cluster() { # run number, rate
  log "run $1 at $2 msgs/s: cluster, publishers on n1, receivers on n2"
  set -- "$2-$1" "$2"
  "${RCLI[@]}" config resetstat >/dev/null
  "${BENCH[@]}" "${SCENARIO[@]}" --rate "$2" --host 127.0.0.1 --port "${PORT_OF[n1]}" --sub-port "${PORT_OF[n2]}" --duration "$DURATION" \
    --users "$USERS" --user-prefix bench --password "$PASSWORD" --broker-pid "${PID_OF[n1]},${PID_OF[n2]},$REDIS_PID" \
    --label "cluster-$1" >"$OUT/cluster-$1.txt" 2>&1 || log "  (run reported a problem, see $OUT/cluster-$1.txt)"
  "${RCLI[@]}" info commandstats >"$OUT/cluster-$1-commandstats.txt"
  grep '^{"scenario"' "$OUT/cluster-$1.txt" >>"$RESULTS" || true
  grep -v '^{' "$OUT/cluster-$1.txt" | sed 's/^/    /' >&2 || true
  grep -E 'cmdstat_(evalsha|eval|spublish|hgetall|hget|ssubscribe|publish|exec|zadd|hset)[:]' "$OUT/cluster-$1-commandstats.txt" | sed 's/^/    /' >&2 || true
}

run_floor() { # run number, rate, mode (script, or none: the pacing loop alone)
  local label="floor-$3-$2-$1" sub i
  log "run $1 at $2 msgs/s: floor ($3), Redis and its clients alone"
  "${FLOOR_TOOL[@]}" sub --redis "127.0.0.1:$REDIS_PORT" >"$OUT/$label-sub.txt" 2>&1 &
  sub=$!
  PIDS+=("$sub")
  for ((i = 0; i < 100; i++)); do grep -q '^ready' "$OUT/$label-sub.txt" && break; sleep 0.1; done
  "${FLOOR_TOOL[@]}" pub --redis "127.0.0.1:$REDIS_PORT" --rate "$2" --warmup "$FLOOR_WARMUP" --duration "$DURATION" --mode "$3" \
    --pids "$REDIS_PID,$sub" >"$OUT/$label-pub.txt" 2>&1 || log "  (floor run reported a problem, see $OUT/$label-pub.txt)"
  wait "$sub" || true
  printf '{"label":"%s","pub":%s,"sub":%s}\n' "$label" "$(grep '^{' "$OUT/$label-pub.txt" || echo null)" \
    "$(grep '^{' "$OUT/$label-sub.txt" || echo null)" >>"$FLOORS"
  grep -v '^{' "$OUT/$label-pub.txt" "$OUT/$label-sub.txt" | grep -v ':ready$' | sed 's/^/    /' >&2 || true
}

if [[ "$PART" == all || "$PART" == rate ]]; then
  : >"$RESULTS"
  : >"$FLOORS"
  start_node single Broker__Store__Type="$STORE"
  start_node n1 "${CLUSTER_ENV[@]}" Broker__Cluster__NodeId=n1
  start_node n2 "${CLUSTER_ENV[@]}" Broker__Cluster__NodeId=n2
  # Tiered compilation: right after start the JIT was 20 % of a cluster node's samples (perf) and the first
  # runs of both sides paid for it. A broker runs for days, so the runs compare steady states.
  if [ "$JIT_WARMUP" -gt 0 ]; then
    log "JIT warm-up: ${JIT_WARMUP} s of unmeasured load on the single node and on the cluster"
    "${BENCH[@]}" "${SCENARIO[@]}" --rate 5000 --host 127.0.0.1 --port "${PORT_OF[single]}" --duration $((JIT_WARMUP / 2)) --warmup 0 \
      --users "$USERS" --user-prefix bench --password "$PASSWORD" --label warmup >"$OUT/jit-warmup-single.txt" 2>&1 || true
    "${BENCH[@]}" "${SCENARIO[@]}" --rate 5000 --host 127.0.0.1 --port "${PORT_OF[n1]}" --sub-port "${PORT_OF[n2]}" --duration $((JIT_WARMUP / 2)) \
      --warmup 0 --users "$USERS" --user-prefix bench --password "$PASSWORD" --label warmup >"$OUT/jit-warmup-cluster.txt" 2>&1 || true
  fi
  n=0
  for rate in $RATES; do
    for ((r = 1; r <= RUNS; r++)); do
      if ((n % 2 == 0)); then run_single "$r" "$rate"; run_cluster "$r" "$rate"; else run_cluster "$r" "$rate"; run_single "$r" "$rate"; fi
      if [ "$FLOOR" = 1 ]; then
        ((r == 1)) && run_floor "$r" "$rate" none
        run_floor "$r" "$rate" script
      fi
      n=$((n + 1))
    done
  done
  # Redis's own round trip on this machine, idle (what one more hop costs at least).
  timeout 4 "${RCLI[@]}" --latency --raw >"$OUT/redis-latency.txt" 2>&1 || true
  log "redis-cli --latency (idle, 4 s; min max avg samples ms): $(tail -1 "$OUT/redis-latency.txt")"
  for n in single n1 n2; do stop_pid "${PID_OF[$n]}"; done

  python3 - "$RESULTS" "$STORE" "$OUT" "$DURATION" "$FLOORS" >"$OUT/summary.txt" <<'EOF'
import json, os, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
floors = [json.loads(l) for l in open(sys.argv[5]) if l.strip()] if os.path.exists(sys.argv[5]) else []
out, duration = sys.argv[3], float(sys.argv[4])
by = {}  # rate -> side -> runs; labels are <side>-<rate>-<run>
for r in rows:
    side, rate, _ = r["label"].split("-")
    by.setdefault(int(rate), {"single": [], "cluster": []})[side].append(r)
def per_msg(r):
    return r["cpu_pct"] / 100 / r["msgs_per_s"] * 1e6 if r.get("cpu_pct") is not None and r.get("msgs_per_s") else None
def med(rs, f):
    v = [f(r) for r in rs if f(r) is not None]
    return statistics.median(v) if v else None
fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if v >= 1000 else f"{v:.3g}")
metrics = [
    ("msgs/s delivered", lambda r: r["msgs_per_s"]),
    ("sent / due", lambda r: r["published"] / (r["rate"] * r["duration"])),
    ("p50 ms", lambda r: r["p50_ms"]),
    ("p99 ms", lambda r: r["p99_ms"]),
    ("CPU % (all processes)", lambda r: r["cpu_pct"]),
    ("CPU µs per msg", per_msg),
    ("acked but lost", lambda r: r["lost"]),
]
for rate, side in sorted(by.items()):
    print(f"\np2p QoS 1, 50 pairs, {rate:,} msgs/s; single node (store {sys.argv[2]}) vs cluster (publishers on n1, receivers")
    print(f"on n2; CPU of n1 + n2 + redis-server); medians of {len(side['single'])} / {len(side['cluster'])} runs, ratio = cluster / single\n")
    print(f"| {'metric':<24} | {'single':>10} | {'cluster':>10} | {'ratio':>6} |")
    print(f"|{'-'*26}|{'-'*12}|{'-'*12}|{'-'*8}|")
    for name, f in metrics:
        s, c = med(side["single"], f), med(side["cluster"], f)
        ratio = f"{c / s:.2f}" if s and c is not None else "-"
        print(f"| {name:<24} | {fmt(s):>10} | {fmt(c):>10} | {ratio:>6} |")
    each = [r.get("cpu_pct_each") for r in side["cluster"] if r.get("cpu_pct_each")]
    msgs = med(side["cluster"], lambda r: r["msgs_per_s"])
    if each and msgs:
        parts = [statistics.median(e[i] for e in each) for i in range(3)]
        print("\ncluster CPU by process (median %, µs per msg): " + ", ".join(
            f"{n} {p:.1f} % ({p / 100 / msgs * 1e6:.1f} µs)" for n, p in zip(["n1", "n2", "redis"], parts)))
    # INFO commandstats of the cluster runs at this rate (reset before each run; whole run: connect,
    # warm-up, window, drain, clean-up), per message published in the run (about rate * (2 + duration)).
    total = rate * (2 + duration)
    stats = {}
    for r in side["cluster"]:
        for line in open(f"{out}/cluster-{r['label'].split('-', 1)[1]}-commandstats.txt"):
            m = re.match(r"cmdstat_(\S+):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)", line)
            if m: stats.setdefault(m[1], []).append((int(m[2]), float(m[4])))
    if stats:
        print(f"\nRedis INFO commandstats, cluster runs at {rate:,} msgs/s (median over runs; commands inside scripts counted too):")
        print(f"| {'command':<14} | {'calls':>9} | {'per msg':>7} | {'usec/call':>9} |")
        print(f"|{'-'*16}|{'-'*11}|{'-'*9}|{'-'*11}|")
        for name, v in sorted(stats.items(), key=lambda kv: -statistics.median(c for c, _ in kv[1])):
            calls = statistics.median(c for c, _ in v)
            if calls >= 0.01 * total:
                print(f"| {name:<14} | {calls:>9,.0f} | {calls / total:>7.2f} | {statistics.median(u for _, u in v):>9.2f} |")
    # The floor: Redis and its two clients alone at this rate (tools/Broker.RedisFloor); the publisher's CPU less
    # what its pacing loop costs without Redis calls (the run in mode none).
    fl = [f for f in floors if f["pub"] and f["sub"] and f["label"].split("-")[2] == str(rate)]
    base = [f["pub"]["cpu_us_each"][0] for f in fl if f["pub"]["mode"] == "none"]
    runs = [f for f in fl if f["pub"]["mode"] == "script"]
    if runs:
        pacing = statistics.median(base) if base else 0.0
        parts = {
            "node 1's Redis client (publisher less pacing)": [f["pub"]["cpu_us_each"][0] - pacing for f in runs],
            "redis-server": [f["pub"]["cpu_us_each"][1] for f in runs],
            "node 2's Redis client (subscriber)": [f["pub"]["cpu_us_each"][2] for f in runs],
        }
        floor_total = statistics.median(sum(f["pub"]["cpu_us_each"]) - pacing for f in runs)
        single_cpu, single_p50, single_p99 = med(side["single"], per_msg), med(side["single"], lambda r: r["p50_ms"]), med(side["single"], lambda r: r["p99_ms"])
        print(f"\nfloor: Redis and its clients alone, no broker (tools/Broker.RedisFloor), medians of {len(runs)} runs; pacing loop {pacing:.1f} µs/msg subtracted")
        print(f"| {'part':<46} | {'µs per msg':>10} |")
        print(f"|{'-'*48}|{'-'*12}|")
        for name, v in parts.items():
            print(f"| {name:<46} | {statistics.median(v):>10.1f} |")
        p50, p99 = statistics.median(f["sub"]["p50_ms"] for f in runs), statistics.median(f["sub"]["p99_ms"] for f in runs)
        ratio = lambda floor, single: f"{floor / single:.2f} x the single node" if single else "-"
        print(f"| {'floor, total':<46} | {floor_total:>10.1f} |  {ratio(floor_total, single_cpu)}")
        print(f"floor latency p50 {p50:.3f} ms ({ratio(p50, single_p50)}), p99 {p99:.3f} ms ({ratio(p99, single_p99)})")
print("\nper run:")
for r in rows:
    print(f"  {r['label']:<16} {r['msgs_per_s']:>8} msgs/s  sent {r['published']}  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms"
          f"  CPU {r['cpu_pct']} % = {per_msg(r) or 0:.1f} µs/msg  lost {r['lost']}" + (f"  each {r['cpu_pct_each']}" if r.get('cpu_pct_each') else ""))
EOF
  cat "$OUT/summary.txt"
fi

# --- memory part -------------------------------------------------------------------------------
if [[ "$PART" == all || "$PART" == memory ]]; then
  used() { "${RCLI[@]}" info memory | awk -F: '/^used_memory:/{gsub("\r",""); print $2}'; }
  "${RCLI[@]}" flushall >/dev/null
  PLAIN=(Broker__Conventions__Enabled=false)
  start_node m1 "${CLUSTER_ENV[@]}" Broker__Cluster__NodeId=n1 "${PLAIN[@]}"
  start_node m2 "${CLUSTER_ENV[@]}" Broker__Cluster__NodeId=n2 "${PLAIN[@]}"
  sleep 1
  keys0="$("${RCLI[@]}" dbsize)"; mem0="$(used)"
  log "memory: $SESSIONS persistent sessions on n2"
  "${BENCH[@]}" park --mosquitto --v5 --session-expiry 3600 --clients "$SESSIONS" --host 127.0.0.1 --port "${PORT_OF[m2]}" \
    --users "$USERS" --user-prefix bench --password "$PASSWORD" >"$OUT/park.txt" 2>&1 || { cat "$OUT/park.txt"; exit 1; }
  sleep 2
  keys1="$("${RCLI[@]}" dbsize)"; mem1="$(used)"
  log "memory: $MESSAGES QoS 1 messages of 300 B published on n1 to them"
  "${BENCH[@]}" fill --mosquitto --v5 --clients "$SESSIONS" --messages "$MESSAGES" --payload 300 --host 127.0.0.1 --port "${PORT_OF[m1]}" \
    --users "$USERS" --user-prefix bench --password "$PASSWORD" >"$OUT/fill.txt" 2>&1 || { cat "$OUT/fill.txt"; exit 1; }
  grep -v '^{' "$OUT/fill.txt" | sed 's/^/    /' >&2 || true
  sleep 2
  keys2="$("${RCLI[@]}" dbsize)"; mem2="$(used)"
  # Keys by prefix, and MEMORY USAGE of a sample of each kind (SAMPLES 0: every element of a structure).
  "${RCLI[@]}" --scan >"$OUT/keys.txt"
  {
    echo "keys by prefix:"
    sed -E 's/^([a-z0-9]+:|[a-z]+$).*/\1/' "$OUT/keys.txt" | sort | uniq -c | sort -rn
    echo "MEMORY USAGE (bytes) of samples:"
    for prefix in 's:' 'q:' 'm:' 'ix:' 'b:' 'f:' 'nsess:' 'node:' 'ims:' 'rec:' 'ret'; do
      k="$(grep -m1 "^$prefix" "$OUT/keys.txt" || true)"
      [[ -z "$k" ]] && continue
      printf '  %-40s %6s bytes  %s %s\n' "$k" "$("${RCLI[@]}" memory usage "$k" samples 0)" "$("${RCLI[@]}" type "$k")" \
        "$(case "$("${RCLI[@]}" type "$k")" in hash) "${RCLI[@]}" hlen "$k";; zset) "${RCLI[@]}" zcard "$k";; set) "${RCLI[@]}" scard "$k";; list) "${RCLI[@]}" llen "$k";; *) echo -;; esac) entries"
    done
    echo "sample rows:"
    k="$(grep -m1 '^s:' "$OUT/keys.txt" || true)"; [[ -n "$k" ]] && "${RCLI[@]}" hgetall "$k" | head -20 | cut -c1-120 | sed 's/^/  s: /'
    k="$(grep -m1 '^ix:' "$OUT/keys.txt" || true)"; [[ -n "$k" ]] && "${RCLI[@]}" hgetall "$k" | head -6 | cut -c1-120 | sed 's/^/  ix: /'
    k="$(grep -m1 '^m:' "$OUT/keys.txt" || true)"; [[ -n "$k" ]] && "${RCLI[@]}" hstrlen "$k" "$("${RCLI[@]}" hkeys "$k" | head -1)" | sed 's/^/  m: bytes of one row: /'
    echo "keys of the fill publishers (clean sessions, disconnected):"
    grep 'fill' "$OUT/keys.txt" | head -3 | sed 's/^/  /'
    k="$(grep -m1 'fill' "$OUT/keys.txt" || true)"
    [[ -n "$k" ]] && { "${RCLI[@]}" hgetall "$k" | tr '\n' ' ' | cut -c1-200; echo " (ttl $("${RCLI[@]}" ttl "$k") s)"; } | sed 's/^/  /'
  } >"$OUT/memory-keys.txt"
  cat "$OUT/memory-keys.txt" >&2
  python3 - "$SESSIONS" "$MESSAGES" "$keys0" "$mem0" "$keys1" "$mem1" "$keys2" "$mem2" >"$OUT/memory.txt" <<'EOF'
import sys
s, m, k0, m0, k1, m1, k2, m2 = map(int, sys.argv[1:])
print(f"\nRedis memory (used_memory), plain mode, 2 nodes, sessions parked on n2, messages published on n1:")
print(f"| {'step':<44} | {'keys':>7} | {'used_memory':>12} | {'delta':>11} | {'bytes each':>10} |")
print(f"|{'-'*46}|{'-'*9}|{'-'*14}|{'-'*13}|{'-'*12}|")
print(f"| {'empty cluster (2 nodes up)':<44} | {k0:>7,} | {m0:>12,} | {'':>11} | {'':>10} |")
print(f"| {f'{s:,} parked sessions (1 subscription each)':<44} | {k1:>7,} | {m1:>12,} | {m1 - m0:>11,} | {(m1 - m0) / s:>10,.0f} |")
print(f"| {f'{m:,} queued QoS 1 messages of 300 B':<44} | {k2:>7,} | {m2:>12,} | {m2 - m1:>11,} | {(m2 - m1) / m:>10,.0f} |")
EOF
  cat "$OUT/memory.txt"
  for n in m1 m2; do stop_pid "${PID_OF[$n]}"; done
fi
log "logs and raw results in $OUT"
