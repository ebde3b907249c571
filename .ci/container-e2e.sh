#!/usr/bin/env bash
# Container end-to-end test: builds the Docker image with podman (on a local stand-in for node:<LTS>-slim) and
# runs it the way users do, with /config and /certs mounted, then checks that
#   1. an HTTPS request for e2e.localhost (SNI == Host) reaches a backend on 127.0.0.1 and returns its body,
#   2. the proxy process runs as a non-root user,
#   2b. a config edit on the host (a new file renamed over the old, as editors save) and a Kubernetes-style
#      certificate update (a new timestamped folder, the `..data` link swapped to it) reach it through the mounts,
#   3. `podman stop` (SIGTERM, then SIGKILL at the `--stop-timeout` README's `docker run` line gives) lets a request
#      in flight finish with its answer and exits 0; every line of `podman logs` is JSON, the last one `stopped`,
# once with one process (the proxy is PID 1) and once with "workers": 2 (PID 1 is the primary). With workers, a
# request that outlasts limits.shutdownTimeout (the default 10 s, as long as docker stop's own default) is cut at
# that deadline and the container still exits 0, before the stop timeout's SIGKILL (exit 137 without it).
# Host networking (the only kind podman has here) means a non-root process cannot bind < 1024, so the config
# listens on free high ports on 127.0.0.1. Everything it starts (backend, container, temp dir) it removes.
# Usage: .ci/container-e2e.sh     Env: NODE_LTS_MAJOR (default 26), PORTICO_SHARED, PORTICO_REUSE_BASE=1,
#        PORTICO_BASE_READY=1 (the caller already ran .ci/node-base.sh), PORTICO_E2E_IMAGE (default portico)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${PORTICO_SHARED:-$(cd "$REPO/.." && pwd)/shared}
PODMAN=$SHARED/containers/podman.sh
MAJOR=${NODE_LTS_MAJOR:-26}
IMAGE=${PORTICO_E2E_IMAGE:-portico}
NAME=portico-e2e-$$
HOSTNAME_=e2e.localhost
START=$SECONDS

say() { printf '[container-e2e %3ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { say "FAIL: $*" >&2; exit 1; }

# The stop timeout users are told to give `docker run` (README, Docker): the runs here use the same.
STOP_TIMEOUT=$(sed -n 's/^docker run .*--stop-timeout \([0-9][0-9]*\).*/\1/p' "$REPO/README.md" | head -1)
[[ -n $STOP_TIMEOUT ]] || { echo "[container-e2e] FAIL: README's 'docker run' line has no --stop-timeout" >&2; exit 1; }

# ---- tools: a missing one fails the run (installing what Debian has, if we are root) ---------------------
need=()
for t in podman runc debootstrap; do command -v "$t" >/dev/null || need+=("$t"); done
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || die "missing ${need[*]} and not root to install them"
  say "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
for t in podman runc debootstrap openssl curl node; do command -v "$t" >/dev/null || die "$t not found"; done
[[ -x $PODMAN ]] || die "$PODMAN not found (set PORTICO_SHARED)"

TMP=$(mktemp -d)
backend_pid=
STARTED=()
CLIENTS=()
cleanup() {
  local rc=$? name
  for name in "${STARTED[@]}"; do
    "$PODMAN" container exists "$name" 2>/dev/null || continue
    if ((rc != 0)); then
      say "logs of $name (last 40 lines):"
      "$PODMAN" logs --tail 40 "$name" 2>&1 | sed 's/^/  | /' || true
    fi
    "$PODMAN" rm -f -t 0 "$name" >/dev/null 2>&1 || true
  done
  [[ -n $backend_pid ]] && kill "$backend_pid" 2>/dev/null || true
  for pid in "${CLIENTS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
  say "done, exit $rc"
}
trap cleanup EXIT

# ---- image -----------------------------------------------------------------------------------------------
t0=$SECONDS
if [[ ${PORTICO_BASE_READY:-0} == 1 ]]; then
  say "base image node:$MAJOR-slim made by the caller"
else
  bash "$HERE/node-base.sh" "$MAJOR"
  say "base image node:$MAJOR-slim ready ($((SECONDS - t0))s)"
fi
t0=$SECONDS
dangling() { podman images -q --no-trunc --filter dangling=true | sed "s/^sha256://" | sort -u; }
dangling >"$TMP/dangling.before"
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# No layer cache (--layers=false: CI starts fresh, and it leaves no intermediate images); the two stages run in
# parallel (--jobs 2: 28 s instead of 45 s here).
"$PODMAN" build --layers=false --jobs 2 -t "$IMAGE" --build-arg "NODE_MAJOR=$MAJOR" "$REPO" >"$TMP/build.log" 2>&1 || {
  tail -40 "$TMP/build.log" >&2; die "podman build failed"; }
# Remove what this build left untagged (the image it replaced under the same tag, any stage), nothing else.
dangling | comm -13 "$TMP/dangling.before" - >"$TMP/dangling.new"
[[ -n $previous ]] && dangling | grep -qx "$previous" && echo "$previous" >>"$TMP/dangling.new"
while read -r id; do podman rmi "$id" >/dev/null 2>&1 || true; done <"$TMP/dangling.new"
say "built image $IMAGE ($((SECONDS - t0))s): node $("$PODMAN" run --rm "$IMAGE" node --version)"
v=$("$PODMAN" run --rm "$IMAGE" node dist/src/main.js --version) || die "'portico --version' failed in the image"
say "ok: image runs the CLI: $v"
# The image's contract with users: user, ports, volumes, stop signal, command.
cfg=$(podman image inspect --format \
  '{{.Config.User}}|{{json .Config.ExposedPorts}}|{{json .Config.Volumes}}|{{.Config.StopSignal}}|{{json .Config.Cmd}}' "$IMAGE")
want='node|{"443/tcp":{},"80/tcp":{}}|{"/certs":{},"/config":{}}|SIGTERM|["node","dist/src/main.js","--config","/config/portico.json"]'
[[ $cfg == "$want" ]] || die "image config is $cfg, expected $want"
say "ok: image config: $cfg"

# ---- free ports on 127.0.0.1 (asked of the kernel, then released) -----------------------------------------
read -r HTTPS_PORT HTTP_PORT BACKEND_PORT < <(node -e '
  const net = require("node:net");
  const ports = [];
  const next = () => {
    if (ports.length === 3) { console.log(ports.join(" ")); return; }
    const s = net.createServer().listen(0, "127.0.0.1", () => { ports.push(s.address().port); s.close(next); });
  };
  next();')
[[ -n $BACKEND_PORT ]] || die "could not find free ports"

# ---- backend: answers every request with a marker body and the path it saw, after ?ms= milliseconds -------
MARKER="portico-e2e-backend-$$-$RANDOM"
node -e '
  const [port, marker] = process.argv.slice(1);
  require("node:http").createServer((req, res) => {
    res.setHeader("content-type", "text/plain");
    const ms = Number(new URL(req.url, "http://x").searchParams.get("ms") ?? 0);
    setTimeout(() => res.end(`${marker} ${req.method} ${req.url} host=${req.headers.host}\n`), ms);
  }).listen(Number(port), "127.0.0.1");
  process.on("SIGTERM", () => process.exit(0));' "$BACKEND_PORT" "$MARKER" &
backend_pid=$!

# ---- throwaway CA and a certificate for e2e.localhost -----------------------------------------------------
mkdir -p "$TMP/pki" "$TMP/config" "$TMP/certs"
(
  cd "$TMP/pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=Portico e2e CA" \
    -keyout ca.key -out ca.crt -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOSTNAME_" \
    -keyout leaf.key -out leaf.csr 2>/dev/null
  printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$HOSTNAME_" >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext \
    -out leaf.crt 2>/dev/null
  # A second certificate for the same name, for the rotation check.
  openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext \
    -out leaf2.crt 2>/dev/null
)
# The certificate as a Kubernetes secret volume lays it out: tls.crt and tls.key link into ..data/, a link to a
# timestamped folder that an update replaces by swapping the link (kubelet's AtomicWriter).
swap_cert() { # CERT-FILE: a new folder with it, ..data swapped to it, the old folder removed
  local d="..$(date +%Y_%m_%d_%H_%M_%S.%N)" old
  mkdir "$TMP/certs/e2e/$d"
  cp "$1" "$TMP/certs/e2e/$d/tls.crt"
  cp "$TMP/pki/leaf.key" "$TMP/certs/e2e/$d/tls.key"
  chmod 600 "$TMP/certs/e2e/$d/tls.key"
  chown -R 1000:1000 "$TMP/certs/e2e/$d"
  old=$(readlink "$TMP/certs/e2e/..data" || true)
  ln -s "$d" "$TMP/certs/e2e/..data_tmp"
  mv -T "$TMP/certs/e2e/..data_tmp" "$TMP/certs/e2e/..data"
  [[ -z $old ]] || rm -rf "${TMP:?}/certs/e2e/$old"
}
mkdir -p "$TMP/certs/e2e"
swap_cert "$TMP/pki/leaf.crt"
ln -s ..data/tls.crt "$TMP/certs/e2e/tls.crt"
ln -s ..data/tls.key "$TMP/certs/e2e/tls.key"
write_config() { # WORKERS [VERSION]: written to a new file renamed over the old, as most editors save
  cat >"$TMP/config/portico.json.new" <<EOF
{
  "listen": {
    "https": { "port": $HTTPS_PORT, "addresses": ["127.0.0.1"] },
    "http": { "port": $HTTP_PORT, "addresses": ["127.0.0.1"] }
  },
  "workers": $1,
  "certsDir": "/certs",
  "hosts": {
    "$HOSTNAME_": {
      "tls": { "cert": "e2e/tls.crt", "key": "e2e/tls.key" },
      "routes": [
        { "path": "/e2e/version", "respond": { "body": "${2:-v1}" } },
        { "path": "/", "upstream": "http://127.0.0.1:$BACKEND_PORT" }
      ]
    }
  }
}
EOF
  chmod 644 "$TMP/config/portico.json.new"
  mv "$TMP/config/portico.json.new" "$TMP/config/portico.json"
}
write_config 1
# As a user would: the config readable by all, the certificate directory owned by the image's uid 1000.
chmod 755 "$TMP" "$TMP/config"
chown -R 1000:1000 "$TMP/certs" && chmod 700 "$TMP/certs"

# ---- run: one case per worker count (1: the proxy is PID 1; 2: PID 1 is the primary, forwarding signals) ----
URL="https://$HOSTNAME_:$HTTPS_PORT/e2e/check?x=1"
CURL=(curl -sS --max-time 5 --cacert "$TMP/pki/ca.crt" --resolve "$HOSTNAME_:$HTTPS_PORT:127.0.0.1")
run_case() { # WORKERS
  local workers=$1 name=$NAME-w$1 body= state t0
  write_config "$workers"
  STARTED+=("$name")
  "$PODMAN" run -d --name "$name" --stop-timeout "$STOP_TIMEOUT" -v "$TMP/config:/config:ro" -v "$TMP/certs:/certs" "$IMAGE" >/dev/null
  t0=$SECONDS
  for _ in $(seq 1 120); do
    state=$("$PODMAN" inspect --format '{{.State.Status}}' "$name")
    [[ $state == running ]] || die "[workers=$workers] container is $state before answering"
    if body=$("${CURL[@]}" -f "$URL" 2>/dev/null); then break; fi
    body=
    sleep 0.25
  done
  [[ -n $body ]] || die "[workers=$workers] no answer from $URL within 30s"
  say "[workers=$workers] ready after $((SECONDS - t0))s"

  # 1. the backend's body, through TLS with SNI == Host
  [[ $body == "$MARKER GET /e2e/check?x=1 "* ]] || die "[workers=$workers] unexpected body: $body (expected: $MARKER GET /e2e/check?x=1 ...)"
  say "[workers=$workers] ok: $URL -> $body"
  local version
  version=$("${CURL[@]}" -o /dev/null -w '%{http_version} %{http_code}' "$URL")
  [[ $version == "2 200" ]] || die "[workers=$workers] second request: HTTP/$version, expected HTTP/2 200"
  say "[workers=$workers] ok: second request: HTTP/$version"

  # 2. not root: the real and effective uid of every process in the container, PID 1 (the proxy) first
  local line pid procs=0 nodes=0 cmd
  while read -r line; do
    pid=${line%%:*}; pid=${pid#/proc/}; pid=${pid%/status}
    read -r _ ruid euid _ <<<"${line#*:}"
    [[ $ruid != 0 && $euid != 0 ]] || die "[workers=$workers] process $pid runs as uid $ruid/$euid"
    procs=$((procs + 1))
  done < <("$PODMAN" exec "$name" sh -c 'grep -H "^Uid:" /proc/[0-9]*/status 2>/dev/null')
  nodes=$("$PODMAN" exec "$name" sh -c 'for f in /proc/[0-9]*/cmdline; do tr "\0" " " <"$f"; echo; done 2>/dev/null' | grep -cE '^(\S*/)?node ' || true)
  cmd=$("$PODMAN" exec "$name" cat /proc/1/cmdline | tr '\0' ' ')
  ((nodes == (workers == 1 ? 1 : workers + 1))) || die "[workers=$workers] $nodes node processes, expected $((workers == 1 ? 1 : workers + 1))"
  say "[workers=$workers] ok: $procs processes, none as root; PID 1 '$cmd', $nodes node processes"

  # 2b. day-2 changes through the mounts: the config edited on the host, the certificate rotated Kubernetes-style
  local got= serial want_serial
  write_config "$workers" "edited-$workers"
  for _ in $(seq 1 40); do
    got=$("${CURL[@]}" "https://$HOSTNAME_:$HTTPS_PORT/e2e/version" 2>/dev/null || true)
    [[ $got == "edited-$workers" ]] && break
    sleep 0.25
  done
  [[ $got == "edited-$workers" ]] || die "[workers=$workers] config edit not picked up within 10s (still: $got)"
  local next=$TMP/pki/leaf2.crt
  ((workers == 1)) || next=$TMP/pki/leaf.crt
  want_serial=$(openssl x509 -noout -serial -in "$next")
  swap_cert "$next"
  for _ in $(seq 1 40); do
    serial=$(openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername "$HOSTNAME_" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null || true)
    [[ $serial == "$want_serial" ]] && break
    sleep 0.25
  done
  [[ $serial == "$want_serial" ]] || die "[workers=$workers] certificate swapped through ..data not served within 10s (serving $serial, want $want_serial)"
  # Every worker serves it: new connections spread over them (SO_REUSEPORT), each one must see the new serial.
  for _ in 1 2 3 4 5 6; do
    serial=$(openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername "$HOSTNAME_" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null || true)
    [[ $serial == "$want_serial" ]] || { sleep 1; serial=$(openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername "$HOSTNAME_" </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null || true); }
    [[ $serial == "$want_serial" ]] || die "[workers=$workers] a connection still got the old certificate a second after another got the new one ($serial)"
  done
  say "[workers=$workers] ok: config edit (renamed over) and ..data certificate swap picked up through the mounts"

  # 3. graceful stop on SIGTERM: `podman stop` as users run it (the container's --stop-timeout), with a request in
  # flight that must get its answer and, with workers, one that outlasts limits.shutdownTimeout (10 s) and is cut.
  local drained=$TMP/drained-$workers cut=$TMP/cut-$workers start_ns stop_ms code min_ms
  "${CURL[@]}" --max-time 30 -w ' %{http_code}' "https://$HOSTNAME_:$HTTPS_PORT/e2e/slow?ms=1500" >"$drained" 2>&1 &
  CLIENTS+=($!)
  min_ms=0
  if ((workers > 1)); then
    "${CURL[@]}" --max-time 60 "https://$HOSTNAME_:$HTTPS_PORT/e2e/stuck?ms=60000" >"$cut" 2>&1 &
    CLIENTS+=($!)
    min_ms=9500
  fi
  sleep 0.5
  start_ns=$(date +%s%N)
  "$PODMAN" stop "$name" >/dev/null
  stop_ms=$((($(date +%s%N) - start_ns) / 1000000))
  code=$("$PODMAN" inspect --format '{{.State.ExitCode}}' "$name")
  [[ $code == 0 ]] || die "[workers=$workers] exit code $code after SIGTERM (stop took ${stop_ms}ms; 137: killed at the ${STOP_TIMEOUT}s stop timeout)"
  ((stop_ms >= min_ms && stop_ms < STOP_TIMEOUT * 1000 - 3000)) || die "[workers=$workers] stop took ${stop_ms}ms, expected ${min_ms}ms to $((STOP_TIMEOUT - 3))s"
  wait "${CLIENTS[@]}" 2>/dev/null || true
  [[ $(<"$drained") == "$MARKER GET /e2e/slow?ms=1500 "*$'\n 200' ]] || die "[workers=$workers] the request in flight at the stop was not answered: $(cat "$drained")"
  say "[workers=$workers] ok: stopped by SIGTERM in ${stop_ms}ms, exit code 0, the request in flight answered"
  # Logs: JSON lines on stdout, every one of them, the last one saying the stop completed; nothing on stderr.
  "$PODMAN" logs "$name" >"$TMP/logs-$workers" 2>"$TMP/stderr-$workers"
  [[ ! -s $TMP/stderr-$workers ]] || die "[workers=$workers] the container wrote to stderr: $(head -3 "$TMP/stderr-$workers")"
  node -e '
    process.on("uncaughtException", (err) => { console.error(err.message); process.exit(1); });
    const lines = require("node:fs").readFileSync(process.argv[1], "utf8").trimEnd().split("\n");
    for (const line of lines) {
      const o = JSON.parse(line);
      if (typeof o.level !== "number" || typeof o.msg !== "string" || typeof o.time !== "number") throw new Error(`not a log line: ${line}`);
    }
    const last = JSON.parse(lines.at(-1));
    if (last.msg !== "stopped" || last.pid !== 1) throw new Error(`last line is not PID 1 saying stopped: ${lines.at(-1)}`);
    if (process.argv[2] === "1" && !lines.some((l) => /"aborted":true/.test(l) && l.includes("/e2e/stuck")))
      throw new Error("no access line for the request cut at limits.shutdownTimeout");
    console.log(`${lines.length} lines`);' "$TMP/logs-$workers" "$((workers > 1))" >"$TMP/logcheck" 2>&1 ||
    die "[workers=$workers] podman logs: $(tail -3 "$TMP/logcheck")"
  say "[workers=$workers] ok: podman logs: $(cat "$TMP/logcheck") of JSON, the last PID 1's 'stopped':"
  tail -2 "$TMP/logs-$workers" | cut -c1-200 | sed 's/^/  | /'
  "$PODMAN" rm "$name" >/dev/null
}
run_case 1
run_case 2
say "PASS ($((SECONDS - START))s)"
