#!/usr/bin/env bash
# Counts the instructions Portico's main thread runs per S1 request (HTTPS, HTTP/1.1 keep-alive, 100-byte
# answer; with H2=1, per S2 request: HTTP/2, 10 streams per connection) under valgrind's callgrind, for two built checkouts in turn. Unlike CPU time, the count does not
# move with the machine's load: a change to the request path is judged by a difference of about 1 %, on a
# shared machine, with other work running (bench/optimisations.md §33).
#
#   bench/scripts/ab-instructions.sh <repo-before> <repo-after> [rounds=2] [requests=6000]
#
# Each repo must be built (npm run build). Uses the workspace of the last `npm run bench` or
# `npm run bench:quick` (bench/.work: certificate, backend nginx config, Portico config), but runs the
# backend and Portico on ports of their own (18191, 19913), so it can run beside ab-cpu.sh. Portico starts
# under callgrind with instrumentation off; 10,000 requests warm it up (the JIT compiles the request path),
# then `callgrind_control -i on`, `requests` more (h2load --h1, 16 connections, 127.0.0.1 only) and a dump.
# A run whose count holds over 5k instructions per request in node's nextTick literal going through V8's
# runtime is flagged ⚠ as not comparable (it happens under valgrind, mostly in S2; optimisations.md §38).
# PLAIN=1 counts an S5 request instead (plain HTTP/1.1 on the http listener, which then serves on 19914).
# FLOOR=1 runs the after checkout's Node floor proxy (bench/floor-proxy.ts) as the after side, on the same
# ports and load: Portico's count over the floor's is what Portico's own work costs (optimisations.md §38).
# The count is the main thread's: V8's compiler and garbage-collector threads are left out (they depend on
# timing), the main thread's own collections are in. CONFIG_BEFORE=<file> and CONFIG_AFTER=<file> run each side
# with a config of its own (the bench's by default; the same repo twice then measures what a feature costs). KEEP=<dir> keeps each run's callgrind file there for
# `callgrind_annotate`; NODEFLAGS=--perf-basic-prof then also lets JIT code be named from /tmp/perf-<pid>.map.
# Needs valgrind (apt-get install -y valgrind), h2load and curl. A run takes about 30 s.
set -euo pipefail
BEFORE=${1:?repo before}; AFTER=${2:?repo after}; ROUNDS=${3:-2}; N=${4:-6000}
W=$(cd "$(dirname "$0")/../.work" && pwd)
for tool in valgrind callgrind_control h2load curl nginx; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y valgrind nghttp2-client curl nginx)" >&2; exit 2; }
done
[[ -f $W/backend/nginx.conf && -f $W/portico/portico.json ]] || { echo "run npm run bench:quick once first (it writes bench/.work)" >&2; exit 2; }
for v in H2 PLAIN FLOOR; do
  [[ ${!v:-0} =~ ^[01]$ ]] || { echo "$v must be 0 or 1, got '${!v}'" >&2; exit 2; }
done
if [[ ${H2:-0} == 1 && ${PLAIN:-0} == 1 ]]; then echo "H2=1 and PLAIN=1 together: HTTP/2 is counted over TLS only (S2), plain HTTP over HTTP/1.1 (S5); choose one" >&2; exit 2; fi
if [[ ${FLOOR:-0} == 1 ]]; then
  [[ -z ${CONFIG_AFTER:-} ]] || { echo "FLOOR=1 runs the floor proxy as the after side, which takes no Portico config: leave CONFIG_AFTER unset" >&2; exit 2; }
  [[ -f $AFTER/dist/bench/floor-proxy.js ]] || { echo "FLOOR=1: no $AFTER/dist/bench/floor-proxy.js (build that checkout: npm run build)" >&2; exit 2; }
fi
CONFIG_BEFORE=${CONFIG_BEFORE:-$W/portico/portico.json}; CONFIG_AFTER=${CONFIG_AFTER:-$W/portico/portico.json}
for f in "$CONFIG_BEFORE" "$CONFIG_AFTER"; do [[ -f $f ]] || { echo "no Portico config at $f (CONFIG_BEFORE / CONFIG_AFTER)" >&2; exit 2; }; done
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $N =~ ^[1-9][0-9]*$ ]] || { echo "rounds and requests must be positive whole numbers" >&2; exit 2; }
BACKEND_PORT=18191; PORT=19913; PLAIN_PORT=19914
RUN=$(mktemp -d /tmp/portico-ab-instructions.XXXXXX)
BACKEND=; VPID=
cleanup() {
  [[ -n $VPID ]] && kill "$VPID" 2>/dev/null || true
  [[ -n $BACKEND ]] && kill "$BACKEND" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT
# The bench's backend and Portico configs, moved to ports of their own.
sed -e "s|$W/backend/|$RUN/|g" -e 's|127.0.0.1:18081|127.0.0.1:'$BACKEND_PORT'|g' -e 's|listen 127.0.0.1:18443 ssl http2;||' "$W/backend/nginx.conf" >"$RUN/nginx.conf"
# A Portico config moved to those ports (HTTPS only, no admin API).
move_config() {
  node -e '
  const [file, out, port, backend, certs, plainPort] = process.argv.slice(1);
  let c;
  try {
    c = JSON.parse(require("fs").readFileSync(file, "utf8"));
    if (typeof c?.listen?.https !== "object" || typeof c.hosts !== "object") throw new Error("no listen.https or hosts");
  } catch (err) {
    console.error(`${file}: not a Portico config with listen.https and hosts (${err.message})`);
    process.exit(2);
  }
  c.listen.https.port = Number(port);
  if (plainPort === "") delete c.listen.http;
  else c.listen.http = { port: Number(plainPort), addresses: ["127.0.0.1"] };
  delete c.admin;
  c.certsDir = certs;
  for (const h of Object.values(c.hosts)) for (const r of h.routes) if (typeof r.upstream === "string") r.upstream = r.upstream.replace(/:18081$/, ":" + backend);
  require("fs").writeFileSync(out, JSON.stringify(c));
  ' "$1" "$2" "$PORT" "$BACKEND_PORT" "$RUN" "$([[ ${PLAIN:-0} == 1 ]] && echo "$PLAIN_PORT")"
}
move_config "$CONFIG_BEFORE" "$RUN/before.json" || exit 2
move_config "$CONFIG_AFTER" "$RUN/after.json" || exit 2
nginx -c "$RUN/nginx.conf" -p "$RUN" >/dev/null 2>&1 &
BACKEND=$!
sleep 0.5
URL=https://bench.localhost:$PORT/; LOAD_URL=$URL; LOAD_PORT=$PORT
# S1: HTTP/1.1, one request at a time per connection. S2 (H2=1): HTTP/2, 10 concurrent streams per connection.
# S5 (PLAIN=1): S1's load over plain HTTP (the host's plainHttp must be "serve", as in the bench's config).
if [[ ${H2:-0} == 1 ]]; then LOAD=(-m 10); else LOAD=(--h1); fi
if [[ ${PLAIN:-0} == 1 ]]; then LOAD_URL=http://bench.localhost:$PLAIN_PORT/; LOAD_PORT=$PLAIN_PORT; fi
one() {
  local label=$1 repo=$2 out="$RUN/$1-$3" ir
  mkdir -p "$out"
  local server=("$repo/dist/src/main.js" --config "$RUN/$label.json")
  if [[ $label == after && ${FLOOR:-0} == 1 ]]; then
    label=floor
    server=("$repo/dist/bench/floor-proxy.js" "{\"httpsPort\":$PORT,\"httpPort\":$PLAIN_PORT,\"certFile\":\"$W/bench.crt\",\"keyFile\":\"$W/bench.key\",\"keepAliveTimeoutMs\":60000,\"upstream\":\"127.0.0.1:$BACKEND_PORT\"}")
  fi
  # shellcheck disable=SC2086
  valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no --callgrind-out-file="$out/cg.%p" \
    node ${NODEFLAGS:-} "${server[@]}" >"$out/log" 2>&1 &
  VPID=$!
  for _ in $(seq 1 120); do curl -sk --resolve "bench.localhost:$PORT:127.0.0.1" -o /dev/null "$URL" && break; sleep 1; done
  # h2load counts any answer as a success: a redirect or an error page would be counted as if it were the load.
  local code
  code=$(curl -sk --resolve "bench.localhost:$LOAD_PORT:127.0.0.1" -o /dev/null -w '%{http_code}' "$LOAD_URL" || true)
  if [[ $code != 200 ]]; then
    local hint=''
    [[ ${PLAIN:-0} == 1 ]] && hint=' (PLAIN=1 needs the host'"'"'s "plainHttp": "serve", as the bench'"'"'s config has)'
    echo "$label: $LOAD_URL answered ${code:-nothing}, not 200$hint" >&2
    exit 1
  fi
  h2load "${LOAD[@]}" -n 10000 -c 16 --connect-to="127.0.0.1:$LOAD_PORT" "$LOAD_URL" >/dev/null 2>&1
  callgrind_control -i on "$VPID" >/dev/null 2>&1
  sleep 1
  local done
  done=$(h2load "${LOAD[@]}" -n "$N" -c 16 --connect-to="127.0.0.1:$LOAD_PORT" "$LOAD_URL" 2>&1 | grep -oE '[0-9]+ succeeded' | cut -d' ' -f1)
  callgrind_control -d "$VPID" >/dev/null 2>&1
  sleep 2
  kill "$VPID"; wait "$VPID" 2>/dev/null || true
  ir=$(awk '/^summary:/{s+=$2} END{print s+0}' "$out"/cg.*.1-01 2>/dev/null || echo 0)
  # The run's folder goes with the script's exit: the server's last lines are shown instead.
  if [[ ${done:-0} != "$N" || $ir == 0 ]]; then echo "$label: run failed (${done:-0} of $N requests answered); the server's last lines:" >&2; tail -n 5 "$out/log" >&2; exit 1; fi
  # node's process.nextTick sometimes runs its tick-object literal through the runtime under valgrind (§38):
  # tens of thousands of instructions per S2 request that the real load never shows. Such a run is flagged.
  local literal note=''
  literal=$(callgrind_annotate --inclusive=yes --threshold=100 "$out"/cg.*.1-01 2>/dev/null | awk -v n="$N" '/Runtime_DefineKeyedOwnPropertyInLiteral/ && !seen {gsub(",", "", $1); printf "%.0f", $1 / n; seen = 1}' || true)
  if [[ ${literal:-0} -gt 5000 ]]; then note="  ⚠ ${literal} of them in node's nextTick literal through the runtime (optimisations.md §38): not comparable"; fi
  printf '%-7s %8.0f instructions per request (main thread, %d requests)%s\n' "$label" "$(awk -v i="$ir" -v n="$N" 'BEGIN{print i/n}')" "$N" "$note"
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP"; cp "$out"/cg.*.1-01 "$KEEP/$label-$3.$VPID.callgrind"; fi
  VPID=
}
for r in $(seq 1 "$ROUNDS"); do one before "$BEFORE" "$r"; one after "$AFTER" "$r"; done
