#!/usr/bin/env bash
# A valid user's CONNECT latency while 20 connections guess a password (docs/reliability.md).
#   tools/login-attack.sh                  # throttled (the defaults) and unthrottled, about 2 minutes
# Each run: a fresh broker (Release, memory store), a baseline of valid connects, then the same
# valid connects from another loopback address (127.0.0.2) while `Broker.Bench guess` runs from
# 127.0.0.1. Prints one JSON line per measurement (Broker.Bench's format) and the broker's CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$(mktemp -d /tmp/ims-attack.XXXXXX)}"
PORT="${PORT:-18830}"
HTTP_PORT="${HTTP_PORT:-18080}"
PASSWORD="bench-pass"
USERS=10

dotnet build -c Release "$ROOT/src/Broker" -v q -nologo >"$OUT/build-broker.log" 2>&1 || { cat "$OUT/build-broker.log"; exit 1; }
dotnet build -c Release "$ROOT/tools/Broker.Bench" -v q -nologo >"$OUT/build-bench.log" 2>&1 || { cat "$OUT/build-bench.log"; exit 1; }
BROKER_DLL="$ROOT/src/Broker/bin/Release/net10.0/Broker.dll"
BENCH=(dotnet "$ROOT/tools/Broker.Bench/bin/Release/net10.0/Broker.Bench.dll")
COMMON=(--host 127.0.0.1 --port "$PORT" --user-prefix bench)
HASH="$(printf '%s\n' "$PASSWORD" | dotnet "$BROKER_DLL" hash-password | tail -1)"

run() { # label, then extra broker settings
  local label="$1"; shift
  local env=(Broker__Mqtt__Host=127.0.0.1 "Broker__Mqtt__Port=$PORT" "Broker__Http__Port=$HTTP_PORT" Broker__Store__Type=memory
             Broker__Sys__Interval=00:00:00 Serilog__MinimumLevel__Default=Error
             Broker__Limits__Roles__user__PublishRate=0 Broker__Limits__Roles__user__PublishBytesRate=0 Broker__Limits__Roles__user__MaxDevices=0 "$@")
  for ((i = 0; i < USERS; i++)); do
    env+=("Broker__Users__${i}__Name=bench$i" "Broker__Users__${i}__PasswordHash=$HASH")
  done
  env "${env[@]}" dotnet "$BROKER_DLL" >"$OUT/broker-$label.log" 2>&1 &
  local pid=$!
  trap "kill $pid 2>/dev/null || true" EXIT
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break; sleep 0.2; done
  # Valid users, no attack: 300 connects at 30/s from 127.0.0.2 (the first of each user is hashed, the rest remembered).
  "${BENCH[@]}" connect "${COMMON[@]}" --users "$USERS" --from 127.0.0.2 --clients 300 --rate 30 --duration 1 --password "$PASSWORD" --client-id-prefix 'GID_IMS@@@base-' --broker-pid "$pid" --label "$label no attack"
  # The attack: 20 connections guessing bench0's password from 127.0.0.1, for 40 s.
  "${BENCH[@]}" guess "${COMMON[@]}" --clients 20 --duration 40 --users 1 --password wrong-guess --client-id-prefix 'GID_IMS@@@guess-' --broker-pid "$pid" --label "$label attacker" &
  local attacker=$!
  sleep 10
  # The same valid connects (new client ids: each is a first login of that device) while the attack runs.
  "${BENCH[@]}" connect "${COMMON[@]}" --users "$USERS" --from 127.0.0.2 --clients 300 --rate 30 --duration 1 --password "$PASSWORD" --client-id-prefix 'GID_IMS@@@valid-' --broker-pid "$pid" --label "$label during attack"
  wait "$attacker" || true
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | grep -E '^ims_broker_(login|connections_limited)' || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  trap - EXIT
}

run throttled
run unthrottled Broker__Limits__LoginFailureDelay=00:00:00 Broker__Limits__LoginMaxDelay=00:00:00 Broker__Limits__MaxConcurrentPasswordChecks=1024
echo "logs: $OUT"
