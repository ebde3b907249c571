# Portico: TLS-terminating multi-host reverse proxy.
#
#   docker build -t portico .
#   docker run -d --name portico -p 80:80 -p 443:443 --stop-timeout 20 \
#     -v "$PWD/config:/config:ro" -v "$PWD/certs:/certs" portico
#
# /config/portico.json is the config; in it, "certsDir": "/certs" (relative paths resolve against the config
# file's directory, so an absolute path is clearest in a container). The process runs as the unprivileged
# user `node` (uid 1000): files in the mounted volumes must be readable by uid 1000, and /certs writable by it
# when ACME stores certificates there. Docker lets a non-root process bind 80/443 inside the container's own
# network namespace (net.ipv4.ip_unprivileged_port_start=0); with host networking, listen on ports >= 1024.
#
# Node: the current LTS line (26, Active LTS since October 2026). CI runs the test suite under this same major.
ARG NODE_MAJOR=26

# ---- build: compile TypeScript with the dev dependencies -------------------------------------------------
FROM node:${NODE_MAJOR}-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# Only src/ is in this stage, so dist/ holds the runtime code alone (no tests, no benchmarks).
RUN npm run build

# ---- runtime: production dependencies and the compiled code, nothing else --------------------------------
FROM node:${NODE_MAJOR}-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# Mount points owned by the runtime user, so an anonymous volume (no -v given) is writable for ACME.
RUN mkdir -p /config /certs && chown node:node /certs
USER node
EXPOSE 80 443
VOLUME ["/config", "/certs"]
# Portico drains connections and exits on SIGTERM within limits.shutdownTimeout (10 s by default). `docker stop`
# sends SIGKILL after 10 s by default, the same 10 s: run with --stop-timeout 20 (Compose: stop_grace_period) so a
# slow request at the stop does not get the container killed (exit 137). An image cannot set this itself.
STOPSIGNAL SIGTERM
CMD ["node", "dist/src/main.js", "--config", "/config/portico.json"]
