#!/usr/bin/env bash
# The crash loop (tests/Broker.IntegrationTests/Durability/CrashLoopTests.cs), longer: the broker runs as its own
# process on the SQLite store and is killed with kill -9 at random moments while v3.1.1 and v5 publishers (QoS 1,
# QoS 2, inbox and P2P) and an online persistent subscriber keep going; every client keeps its session state in the
# test and re-sends what was not acknowledged. At the end it asserts, per subscriber (online, offline through the
# loop, a P2P mailbox): no acknowledged message missing, no QoS 2 duplicate, order kept. See docs/reliability.md.
#
#   tools/crash-loop.sh                 # 20 kills, a random seed (printed first)
#   tools/crash-loop.sh 12345           # 20 kills, seed 12345 (same kill triggers and windows; timing still varies)
#   ITERATIONS=50 tools/crash-loop.sh 12345
#   RUNS=5 tools/crash-loop.sh          # five runs, each with its own random seed; a summary line per run
#
# Environment:
#   ITERATIONS=20   kills per run (IMS_CRASH_ITERATIONS; the test's default, as in CI, is 8)
#   RUNS=1          runs one after the other
#   OUT=dir         where each run's full output goes (default: a new temp dir)
#   NO_BUILD=1      skip the build (the test project must be built already)
#
# The full report of each run (counts per subscriber, per kill, packet traces of duplicates and losses) is in
# $OUT/run-<n>.txt; the exit status is non-zero if any run failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SEED="${1:-}"
ITERATIONS="${ITERATIONS:-20}"
RUNS="${RUNS:-1}"
OUT="${OUT:-$(mktemp -d -t ims-crash-loop-XXXXXX)}"
mkdir -p "$OUT"

if [[ -z "${NO_BUILD:-}" ]]; then
  dotnet build "$ROOT/tests/Broker.IntegrationTests" -v quiet -nologo >/dev/null
fi

failed=0
for ((run = 1; run <= RUNS; run++)); do
  log="$OUT/run-$run.txt"
  status=passed
  IMS_CRASH_ITERATIONS="$ITERATIONS" IMS_CRASH_SEED="$SEED" \
    dotnet test "$ROOT/tests/Broker.IntegrationTests" --no-build \
      --filter "FullyQualifiedName~Durability.CrashLoopTests" \
      --logger "console;verbosity=detailed" >"$log" 2>&1 || { status=FAILED; failed=1; }
  # The test's own lines (seed, counts per subscriber), without xUnit's prefixes.
  echo "run $run: $status ($log)"
  sed -n '/Standard Output Messages:/,$p' "$log" | grep -E '^ (seed|bob-|publisher|error)|^   [0-9]+ x ' | sed 's/^ /  /' || true
done

exit "$failed"
