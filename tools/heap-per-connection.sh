#!/usr/bin/env bash
# What one idle connection costs the broker, by type (issue 6).
#
#   tools/heap-per-connection.sh [connections] [connect|raw]
#
# Starts the broker (Release, Production, 127.0.0.1, free ports, memory store, ten bench users),
# takes a snapshot of its live managed heap (tools/Broker.HeapStat, ClrMD), opens N connections from
# one Python process (connect: each sends CONNECT and gets CONNACK; raw: TCP only, no CONNECT),
# takes a second snapshot and prints the live bytes per connection by type, split into the transport
# (Kestrel, sockets, pipelines, logging scopes) and the broker's own (Broker.*, MQTTnet.*), plus the
# RSS growth per connection. Everything it starts is stopped on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${1:-5000}"
MODE="${2:-connect}"
OUT="$(mktemp -d /tmp/ims-heap.XXXXXX)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

dotnet build -c Release src/Broker -v q -nologo >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
dotnet build -c Release tools/Broker.HeapStat -v q -nologo >>"$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
BROKER_DLL="$ROOT/src/Broker/bin/Release/net10.0/Broker.dll"
HEAPSTAT=(dotnet "$ROOT/tools/Broker.HeapStat/bin/Release/net10.0/Broker.HeapStat.dll")
# shellcheck source=tools/lib.sh
source "$ROOT/tools/lib.sh"
PORT="$(free_port)"
HASH="$(printf 'bench-pass\n' | dotnet "$BROKER_DLL" hash-password | tail -1)"
ENV=(ASPNETCORE_ENVIRONMENT=Production DOTNET_ENVIRONMENT=Production Broker__Mqtt__Host=127.0.0.1 Broker__Mqtt__Port="$PORT"
     Broker__Http__Port="$(free_port)" Broker__DataPath="$OUT/data" Broker__Store__Type=memory
     Broker__Limits__Roles__user__PublishRate=0 Broker__Limits__Roles__user__PublishBytesRate=0 Broker__Limits__Roles__user__MaxDevices=0 # many devices per user: not contract §13's limits
     Broker__Limits__ConnectRatePerSource=0) # every connection comes from 127.0.0.1
for i in $(seq 0 9); do ENV+=("Broker__Users__${i}__Name=bench$i" "Broker__Users__${i}__PasswordHash=$HASH" "Broker__Users__${i}__Role=user"); done

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
env "${ENV[@]}" dotnet "$BROKER_DLL" >"$OUT/broker.log" 2>&1 &
BROKER=$!
PIDS+=("$BROKER")
wait_listening "$OUT/broker.log" "$BROKER" 30
sleep 2
rss() { awk '/VmRSS/{print $2}' "/proc/$BROKER/status"; }
"${HEAPSTAT[@]}" "$BROKER" "$OUT/before.tsv" | sed "s/^/before: /"
RSS0="$(rss)"

python3 - "$PORT" "$N" "$MODE" >"$OUT/clients.log" 2>&1 <<'PY' &
import socket, struct, sys, time
port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def s(x): b = x.encode(); return struct.pack(">H", len(b)) + b
def connect(i):  # MQTT 3.1.1 CONNECT, clean session, keep-alive 600 s
    body = s("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 600) + s("GID_IMS@@@heap-%06d" % i) + s("bench%d" % (i % 10)) + s("bench-pass")
    length, rl = b"", len(body)
    while True:
        d, rl = rl % 128, rl // 128
        length += bytes([d | (0x80 if rl else 0)])
        if not rl: break
    return bytes([0x10]) + length + body
held = []
for i in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    if mode == "connect":
        c.sendall(connect(i)); r = c.recv(4)
        assert r[:1] == b"\x20" and r[3] == 0, r
    held.append(c)
print("ready", flush=True)
time.sleep(3600)
PY
PIDS+=("$!")
for _ in $(seq 1 3000); do grep -q ready "$OUT/clients.log" && break; sleep 0.1; done
grep -q ready "$OUT/clients.log" || { cat "$OUT/clients.log"; exit 1; }
sleep 2
RSS1="$(rss)"
"${HEAPSTAT[@]}" "$BROKER" "$OUT/after.tsv" | sed "s/^/after: /"

python3 - "$OUT/before.tsv" "$OUT/after.tsv" "$N" "$MODE" "$RSS0" "$RSS1" <<'PY'
import sys
before, after, n, mode, rss0, rss1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
def load(p):
    d = {}
    for line in open(p):
        c, b, t = line.rstrip("\n").split("\t", 2); d[t] = (int(c), int(b))
    return d
a, b = load(before), load(after)
rows = sorted(((by - a.get(t, (0, 0))[1], c - a.get(t, (0, 0))[0], t) for t, (c, by) in b.items()), reverse=True)
rows = [r for r in rows if r[0] > 0]
ours = lambda t: "Broker." in t or "MQTTnet." in t
total = sum(r[0] for r in rows) / n
own = sum(r[0] for r in rows if ours(r[2])) / n
print(f"{n} {mode} connections: live managed heap {total:,.0f} B per connection "
      f"(broker and MQTTnet types {own:,.0f} B, transport, runtime and collections {total - own:,.0f} B); "
      f"RSS {(rss1 - rss0) * 1024 / n:,.0f} B per connection")
print(f"{'B/conn':>8} {'obj/conn':>8}  type")
for by, c, t in rows[:45]:
    if by / n < 8: break
    print(f"{by / n:8.1f} {c / n:8.2f}  {t[:150]}")
PY
