#!/usr/bin/env bash
# Samples Portico with `perf record -g` (native frames: TLS, copies, the garbage collector, the kernel) while
# wrk loads it, then prints the top symbols. What `node --cpu-prof` cannot show.
#
#   bench/scripts/perf-portico.sh [path=/1m] [connections=16] [out=bench/.work/perf.data]
#
# Needs linux-perf (apt-get install -y linux-perf) and the workspace of a previous `npm run bench:quick`.
set -euo pipefail
URLPATH=${1:-/1m}; CONNS=${2:-16}
W=$(cd "$(dirname "$0")/../.work" && pwd)
OUT=${3:-$W/perf.data}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
[[ -f $W/backend/nginx.conf && -f $W/portico/portico.json && -f $W/client-openssl.cnf ]] || { echo "run npm run bench:quick once first (it writes bench/.work)" >&2; exit 2; }
PORT=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).listen.https.port)' "$W/portico/portico.json")
taskset -c 1 nginx -c "$W/backend/nginx.conf" -p "$W/backend" >/dev/null 2>&1 &
taskset -c 0 node "$REPO/dist/src/main.js" --config "$W/portico/portico.json" >/dev/null 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; kill "$(cat "$W/backend/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
sleep 1.5
OPENSSL_CONF=$W/client-openssl.cnf taskset -c 1 wrk -t1 -c"$CONNS" -d1s -s "$W/resolve-127.lua" "https://bench.localhost:$PORT$URLPATH" >/dev/null
perf record -F 1999 -g -p "$PID" -o "$OUT" -- sleep 5 >/dev/null 2>&1 &
PERF=$!
OPENSSL_CONF=$W/client-openssl.cnf taskset -c 1 wrk -t1 -c"$CONNS" -d5s -s "$W/resolve-127.lua" "https://bench.localhost:$PORT$URLPATH" | grep -E 'Requests/sec|Transfer/sec'
wait "$PERF" || true
perf report -i "$OUT" --no-children --sort dso,sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25
echo "callers of a symbol: perf report -i $OUT --no-children --sort sym -S <symbol> -G"
