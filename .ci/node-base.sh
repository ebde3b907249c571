#!/usr/bin/env bash
# Makes the local stand-in for the official node:<MAJOR>-slim image with the shared script, then checks that
# `node --version` runs in it. Node 25+ links against libatomic.so.1; the official node:*-slim images ship
# libatomic1, but the shared stand-in (Debian minbase) does not, so Node 26 fails to start there. When that is
# the failure, this adds libatomic1 (the .deb fetched on the host with apt, installed with dpkg in the image)
# and re-tags the result under the same official names, so the project's Dockerfile builds unchanged.
# Usage: .ci/node-base.sh MAJOR      Env: PORTICO_SHARED (default: <repo>/../shared), PORTICO_REUSE_BASE=1
# keeps an existing working node:<MAJOR>-slim instead of rebuilding it (local iteration only; CI rebuilds).
set -euo pipefail
MAJOR=${1:?usage: node-base.sh MAJOR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHARED=${PORTICO_SHARED:-$(cd "$HERE/../.." && pwd)/shared}
CONTAINERS=$SHARED/containers
[[ -x $CONTAINERS/make-node-base.sh && -x $CONTAINERS/podman.sh ]] || {
  echo "node-base: $CONTAINERS/make-node-base.sh or podman.sh missing (set PORTICO_SHARED)" >&2; exit 1; }
PODMAN=$CONTAINERS/podman.sh
IMAGE=docker.io/library/node:$MAJOR-slim

node_in_image() { "$PODMAN" run --rm --pull=never "$IMAGE" node --version 2>&1; }

if [[ ${PORTICO_REUSE_BASE:-0} == 1 ]] && out=$(node_in_image) && [[ $out == v$MAJOR.* ]]; then
  echo "node-base: reusing existing $IMAGE ($out)"
  exit 0
fi

echo "node-base: building $IMAGE with $CONTAINERS/make-node-base.sh $MAJOR"
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
"$CONTAINERS/make-node-base.sh" "$MAJOR"
# The image this replaced under the same tags (from an earlier run) is now untagged: remove it, by id.
if [[ -n $previous ]] && podman images -q --no-trunc --filter dangling=true | sed "s/^sha256://" | grep -qx "$previous"; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi

if out=$(node_in_image); then
  echo "node-base: $IMAGE runs node $out"
  exit 0
fi
if [[ $out != *libatomic.so.1* ]]; then
  echo "node-base: node does not start in $IMAGE: $out" >&2
  exit 1
fi

echo "node-base: node $MAJOR needs libatomic1, which the official slim image has and the stand-in lacks; adding it"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
( cd "$WORK" && apt-get download libatomic1 >/dev/null 2>&1 ) || {
  echo "node-base: apt-get download libatomic1 failed (run apt-get update?)" >&2; exit 1; }
cat >"$WORK/Containerfile" <<EOF
FROM $IMAGE
COPY libatomic1_*.deb /tmp/
RUN dpkg -i /tmp/libatomic1_*.deb && rm -f /tmp/libatomic1_*.deb && node --version
EOF
stand_in=$(podman image inspect --format '{{.Id}}' "$IMAGE")
"$PODMAN" build -q -t "$IMAGE" -f "$WORK/Containerfile" "$WORK" >/dev/null
for t in "$MAJOR-bookworm-slim" "$MAJOR" "$MAJOR-bookworm" lts-slim lts; do
  podman tag "$IMAGE" "docker.io/library/node:$t"
done
# The stand-in this run imported is now untagged: remove it (by id; it is ours) so reruns leave no layers behind.
podman rmi "$stand_in" >/dev/null 2>&1 || true
out=$(node_in_image) || { echo "node-base: node still does not start in $IMAGE: $out" >&2; exit 1; }
echo "node-base: $IMAGE runs node $out"
