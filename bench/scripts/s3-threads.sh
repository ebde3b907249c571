#!/usr/bin/env bash
# Where a new TLS connection's CPU goes, per thread: one server under the S3 client (a full TLS handshake and
# one request per connection), its threads' user and system time per connection from /proc/PID/task/*/stat.
#
#   bench/scripts/s3-threads.sh portico|alone|floor [warm-up seconds=6] [measured seconds=5]
#
# portico: dist/src/main.js on the bench's Portico config; alone: bench/node-alone-server.ts (Node answering by
# itself); floor: bench/floor-proxy.ts. The server runs on CPU 0, the client and the backend nginx on CPU 1,
# 127.0.0.1 only. NODE=<node binary> runs the server on another Node; NODEFLAGS="<flags>" adds node flags (say
# --openssl-config=<file>, bench/optimisations.md §36). Needs bench/.work from `npm run bench:quick` or a run.
set -euo pipefail
WHICH=${1:?portico, alone or floor}; WARM=${2:-6}; MEAS=${3:-5}
R=$(cd "$(dirname "$0")/../.." && pwd); W=$R/bench/.work
[[ -f $W/backend/nginx.conf ]] || { echo "run npm run bench:quick once first (it writes bench/.work)" >&2; exit 2; }
NODEBIN=${NODE:-node}; read -r -a FLAGS <<<"${NODEFLAGS:-}"
PORT=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).listen.https.port)' "$W/portico/portico.json")
PLAIN=$((PORT + 7))
taskset -c 1 nginx -c "$W/backend/nginx.conf" -p "$W/backend" >/dev/null 2>&1 &
pid=
trap 'kill "$(cat "$W/backend/nginx.pid" 2>/dev/null)" 2>/dev/null || true; [[ -n $pid ]] && kill "$pid" 2>/dev/null || true' EXIT
sleep 0.5
S="\"httpsPort\":$PORT,\"httpPort\":$PLAIN,\"certFile\":\"$W/bench.crt\",\"keyFile\":\"$W/bench.key\",\"keepAliveTimeoutMs\":60000"
case $WHICH in
  portico) taskset -c 0 "$NODEBIN" "${FLAGS[@]}" "$R/dist/src/main.js" --config "$W/portico/portico.json" >/dev/null 2>&1 & ;;
  alone) taskset -c 0 "$NODEBIN" "${FLAGS[@]}" "$R/dist/bench/node-alone-server.js" "{$S,\"smallBody\":\"$(printf 'x%.0s' {1..100})\",\"largeFile\":\"$W/www/1m\"}" >/dev/null 2>&1 & ;;
  floor) taskset -c 0 "$NODEBIN" "${FLAGS[@]}" "$R/dist/bench/floor-proxy.js" "{$S,\"upstream\":\"127.0.0.1:18081\"}" >/dev/null 2>&1 & ;;
  *) echo "portico, alone or floor, not '$WHICH'" >&2; exit 2 ;;
esac
pid=$!
sleep 2
load() { taskset -c 1 node "$R/dist/bench/handshake-client.js" "{\"port\":$PORT,\"host\":\"bench.localhost\",\"durationMs\":$1,\"concurrency\":16,\"resume\":false}"; }
# tid, thread name, utime and stime in clock ticks
snap() { for t in /proc/"$pid"/task/*; do echo "$(basename "$t") $(tr ' ' _ <"$t/comm") $(awk '{print $14, $15}' "$t/stat")"; done | sort; }
load $((WARM * 1000)) >/dev/null
before=$(snap)
out=$(load $((MEAS * 1000)))
after=$(snap)
n=$(node -e 'const r = JSON.parse(process.argv[1]); console.log(r.full + r.resumed)' "$out")
echo "$WHICH: $n connections in ${MEAS} s; client: $out"
TICK_US=$((1000000 / $(getconf CLK_TCK)))
join <(echo "$before") <(echo "$after") | awk -v n="$n" -v tick="$TICK_US" -v main="$pid" '
  { u = ($6 - $3) * tick / n; s = ($7 - $4) * tick / n; tu += u; ts += s
    if (u + s > 0) printf "  %-7s %-16s user %7.1f  system %7.1f  µs per connection\n", $1, ($1 == main ? "main thread" : $2), u, s }
  END { printf "  all threads              user %7.1f  system %7.1f  µs per connection\n", tu, ts }'
