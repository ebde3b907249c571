#!/usr/bin/env bash
# Alternates two Portico builds under the S3 client (one new TLS connection per request) and prints each
# run's CPU per connection, summed over Portico's process tree (the primary and its workers).
#
#   bench/scripts/ab-handshake.sh <repo-before> <repo-after> [rounds=3] [resume=false]
#
# resume=true: returning clients, each of the 16 concurrent slots offering the session ticket of its
# previous connection (bench/optimisations.md §17); false: every handshake full, as S3.
# Each repo must be built (npm run build). Uses the workspace of the last `npm run bench` or
# `npm run bench:quick` (bench/.work: certificate, backend nginx config, Portico config); the backend
# nginx runs on CPU 1. PORTICO_CONFIG=<file> runs another config (say, one with "workers": 2), and
# PIN=1 pins Portico to CPU 0 and the client to CPU 1 (leave it unset for workers). 1 s warm-up and 5 s
# measured per run, 127.0.0.1 only. NODE_BEFORE=<node binary> and NODE_AFTER=<node binary> run each side on
# its own Node (the same repo twice compares Node versions, say the machine's and the Docker image's).
set -euo pipefail
BEFORE=${1:?repo before}; AFTER=${2:?repo after}; ROUNDS=${3:-3}; RESUME=${4:-false}
W=$(cd "$(dirname "$0")/../.work" && pwd)
CONFIG=${PORTICO_CONFIG:-$W/portico/portico.json}
[[ -f $W/backend/nginx.conf ]] || { echo "run npm run bench:quick once first (it writes bench/.work)" >&2; exit 2; }
[[ -f $CONFIG ]] || { echo "no Portico config at $CONFIG" >&2; exit 2; }
[[ $RESUME == true || $RESUME == false ]] || { echo "resume must be true or false" >&2; exit 2; }
for bin in "${NODE_BEFORE:-node}" "${NODE_AFTER:-node}"; do
  command -v "$bin" >/dev/null || { echo "no node binary at '$bin' (NODE_BEFORE / NODE_AFTER)" >&2; exit 2; }
done
PORT=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).listen.https.port)' "$CONFIG")
CLIENT=$(cd "$(dirname "$0")/../.." && pwd)/dist/bench/handshake-client.js
TICK_US=$((1000000 / $(getconf CLK_TCK)))
taskset -c 1 nginx -c "$W/backend/nginx.conf" -p "$W/backend" >/dev/null 2>&1 &
trap 'kill "$(cat "$W/backend/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
sleep 0.5
PIN0=(); PIN1=()
[[ -n ${PIN:-} ]] && PIN0=(taskset -c 0) && PIN1=(taskset -c 1)
# utime + stime in ticks of a process and its children (a primary's workers).
tree_ticks() {
  local total=0 p t
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
load() {
  "${PIN1[@]}" node "$CLIENT" "{\"port\":$PORT,\"host\":\"bench.localhost\",\"durationMs\":$1,\"concurrency\":16,\"resume\":$RESUME}"
}
one() {
  local label=$1 repo=$2 bin=$3 pid t0 t1 out n
  # Started directly (no function or subshell around it), so that $! is Portico's own PID.
  "${PIN0[@]}" "$bin" "$repo/dist/src/main.js" --config "$CONFIG" >/dev/null 2>&1 &
  pid=$!
  sleep 2
  load 1000 >/dev/null
  t0=$(tree_ticks "$pid")
  out=$(load 5000)
  t1=$(tree_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  n=$(node -e 'const r = JSON.parse(process.argv[1]); console.log(r.full + r.resumed)' "$out")
  printf '%-7s %6d µs CPU/connection  %s\n' "$label" $(( (t1 - t0) * TICK_US / n )) "$out"
  sleep 1
}
for _ in $(seq 1 "$ROUNDS"); do one before "$BEFORE" "${NODE_BEFORE:-node}"; one after "$AFTER" "${NODE_AFTER:-node}"; done
