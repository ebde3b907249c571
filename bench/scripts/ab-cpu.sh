#!/usr/bin/env bash
# Alternates two Portico builds under the same load and prints each run's CPU per request (user, system),
# so a change to the request path is judged pair by pair rather than against a noisy absolute figure.
#
#   bench/scripts/ab-cpu.sh <repo-before> <repo-after> [rounds=4] [path=/] [connections=64]
#
# Each repo must be built (npm run build). Uses the workspace of the last `npm run bench` or
# `npm run bench:quick` (bench/.work: certificate, backend nginx config, Portico config): the backend
# nginx on CPU 1 with wrk, Portico pinned to CPU 0, 1 s warm-up and 5 s measured per run, 127.0.0.1 only.
# path "/" is S1 (100 bytes), "/1m" is S4 (1 MiB; use 16 connections, as the bench does).
# PORTICO_CONFIG=<file> runs another config (say, one with "log": {"access": true}); PORTICO_STDOUT=<file>
# sends Portico's output (its log) to that file instead of /dev/null. H2=1 loads over HTTP/2 with h2load
# instead (S2: connections × 10 streams; use 32 connections, as the bench does). NODE_BEFORE=<node binary>
# and NODE_AFTER=<node binary> run each side on its own Node (the same repo twice compares Node versions).
# STREAMS=<n> (with H2=1): concurrent streams per connection, 10 by default (1: one download per connection).
# BODY=<KiB>: every request is a POST uploading that many KiB (the backend reads and drops it; with path "/" its
# answer is the 100-byte one), to compare upload paths: µs per request is then per BODY KiB uploaded.
set -euo pipefail
BEFORE=${1:?repo before}; AFTER=${2:?repo after}; ROUNDS=${3:-4}; URLPATH=${4:-/}; CONNS=${5:-64}
W=$(cd "$(dirname "$0")/../.work" && pwd)
CONFIG=${PORTICO_CONFIG:-$W/portico/portico.json}; OUT=${PORTICO_STDOUT:-/dev/null}
[[ -f $W/backend/nginx.conf && -f $W/client-openssl.cnf ]] || { echo "run npm run bench:quick once first (it writes bench/.work)" >&2; exit 2; }
# The TLS 1.3 suites every bench client offers, in browsers' order (bench/client-tls.ts; wrk reads them from
# the workspace's client-openssl.cnf).
SUITES=$(sed -n 's/^Ciphersuites = //p' "$W/client-openssl.cnf")
[[ -f $CONFIG ]] || { echo "no Portico config at $CONFIG (PORTICO_CONFIG, or bench/.work/portico/portico.json from npm run bench:quick)" >&2; exit 2; }
for bin in "${NODE_BEFORE:-node}" "${NODE_AFTER:-node}"; do
  command -v "$bin" >/dev/null || { echo "no node binary at '$bin' (NODE_BEFORE / NODE_AFTER)" >&2; exit 2; }
done
[[ -z ${BODY:-} || $BODY =~ ^[1-9][0-9]*$ ]] || { echo "BODY must be a positive whole number of KiB, got '$BODY'" >&2; exit 2; }
[[ ${STREAMS:-10} =~ ^[1-9][0-9]*$ ]] || { echo "STREAMS must be a positive whole number of streams per connection, got '$STREAMS'" >&2; exit 2; }
PORT=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).listen.https.port)' "$CONFIG")
TICK_US=$((1000000 / $(getconf CLK_TCK)))
WRK_SCRIPT=$W/resolve-127.lua; H2_BODY=()
if [[ -n ${BODY:-} ]]; then
  mkdir -p "$W/load"; head -c $((BODY * 1024)) /dev/zero | tr '\0' x >"$W/load/upload.bin"
  WRK_SCRIPT=$W/load/upload.lua
  { cat "$W/resolve-127.lua"; printf 'wrk.method = "POST"\nlocal f = io.open("%s", "rb")\nwrk.body = f:read("*a")\nf:close()\n' "$W/load/upload.bin"; } >"$WRK_SCRIPT"
  H2_BODY=(-d "$W/load/upload.bin")
fi
taskset -c 1 nginx -c "$W/backend/nginx.conf" -p "$W/backend" >/dev/null 2>&1 &

trap 'kill "$(cat "$W/backend/nginx.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
sleep 0.5
# µs per request, to a tenth, of $1 clock ticks over $2 requests.
per_request() {
  awk -v x="$1" -v t="$TICK_US" -v n="$2" 'BEGIN { printf "%.1f", x * t / n }'
}
one() {
  local label=$1 repo=$2 bin=$3 pid u0 s0 u1 s1 out n
  taskset -c 0 "$bin" "$repo/dist/src/main.js" --config "$CONFIG" >"$OUT" 2>&1 &
  pid=$!
  sleep 1.2
  load 1 >/dev/null
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  out=$(load 5)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [[ -n ${H2:-} ]]; then n=$(grep -oE '[0-9]+ 2xx' <<<"$out" | cut -d' ' -f1); else n=$(awk '/requests in/{print $1}' <<<"$out"); fi
  local cpu
  cpu=$(per_request $((u1 - u0 + s1 - s0)) "$n")
  printf '%-7s %7s µs CPU/request (user %s, system %s), %d requests%s\n' "$label" "$cpu" \
    "$(per_request $((u1 - u0)) "$n")" "$(per_request $((s1 - s0)) "$n")" "$n" \
    "$(grep -qE 'Non-2xx|Socket errors|[1-9][0-9]* failed|[1-9][0-9]* errored' <<<"$out" && echo '  ⚠ errors' || true)"
  CPU[$label]=$cpu
}
# One bounded load run of $1 seconds on CPU 1: wrk, or h2load with H2=1 (-N3s: a silent connection ends as an error).
load() {
  if [[ -n ${H2:-} ]]; then
    taskset -c 1 h2load -t1 -c"$CONNS" -m"${STREAMS:-10}" -D"$1" "${H2_BODY[@]}" -N3s --connect-to="127.0.0.1:$PORT" --tls13-ciphers="$SUITES" "https://bench.localhost:$PORT$URLPATH"
  else
    OPENSSL_CONF=$W/client-openssl.cnf taskset -c 1 wrk -t1 -c"$CONNS" -d"$1"s -s "$WRK_SCRIPT" "https://bench.localhost:$PORT$URLPATH"
  fi
}
declare -A CPU
RATIOS=()
for _ in $(seq 1 "$ROUNDS"); do
  one before "$BEFORE" "${NODE_BEFORE:-node}"; one after "$AFTER" "${NODE_AFTER:-node}"
  RATIOS+=("$(awk -v a="${CPU[after]}" -v b="${CPU[before]}" 'BEGIN { printf "%.2f", a / b }')")
done
# The pairs' ratios, sorted, and their median: judge by these.
printf 'after ÷ before, per pair: %s; median %s\n' "$(printf '%s\n' "${RATIOS[@]}" | sort -n | tr '\n' ' ')" \
  "$(printf '%s\n' "${RATIOS[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')"
