# Shared by the tools/*.sh scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# wait_listening LOG PID [SECONDS]: returns once the broker has logged that it listens for MQTT over
# TCP; prints its log and fails if it exits first or takes longer than SECONDS (default 30).
wait_listening() {
  local log="$1" pid="$2" tenths=$(( ${3:-30} * 10 )) i
  for ((i = 0; i < tenths; i++)); do
    grep -q "Listening for MQTT over TCP" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "the broker exited" >&2; return 1; }
    sleep 0.1
  done
  cat "$log" >&2
  echo "the broker did not start within ${3:-30} s" >&2
  return 1
}

# trap_cleanup_pids: on exit, stop every process whose pid the script added to PIDS (and wait for it).
trap_cleanup_pids() {
  cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}
