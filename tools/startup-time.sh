#!/usr/bin/env bash
# Start-up time of IMS Broker with N stored persistent sessions (issue 6): from process start to
# the "Listening for MQTT over TCP" log line.
#
#   tools/startup-time.sh            # 100,000 sessions
#   tools/startup-time.sh 10000
#
# Builds Release, creates a store in a temp directory (the broker makes the schema), fills it with
# tools/gen-sessions.py, starts the broker three times on it and prints each time. Loopback only;
# stops what it started.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${1:-100000}"
DATA="$(mktemp -d /tmp/ims-startup.XXXXXX)"
dotnet build -c Release src/Broker -v q -nologo >"$DATA/build.log" 2>&1 || { cat "$DATA/build.log"; exit 1; }
# shellcheck source=tools/lib.sh
source "$ROOT/tools/lib.sh"

PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; true' EXIT

start() { # prints seconds from process start to the listening line, and RSS
  local log="$DATA/broker.log" t0 t1
  : >"$log"
  t0=$(date +%s.%N)
  env ASPNETCORE_ENVIRONMENT=Production DOTNET_ENVIRONMENT=Production Broker__Mqtt__Host=127.0.0.1 \
    Broker__Mqtt__Port="$(free_port)" Broker__Http__Port="$(free_port)" Broker__DataPath="$DATA" \
    dotnet src/Broker/bin/Release/net10.0/Broker.dll >"$log" 2>&1 &
  PID=$!
  until grep -q "Listening for MQTT over TCP" "$log"; do
    kill -0 "$PID" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.01
  done
  t1=$(date +%s.%N)
  printf '%s s, RSS %s KiB; %s\n' "$(python3 -c "print(round($t1 - $t0, 2))")" \
    "$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")" "$(grep -o 'Restored [0-9]* sessions' "$log")"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

echo "empty store:"; start
python3 tools/gen-sessions.py "$DATA" "$N"
for i in 1 2 3; do echo "run $i:"; start; done
rm -rf "$DATA"
