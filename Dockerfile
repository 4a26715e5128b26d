# syntax=docker/dockerfile:1
# Peregrine runs its TypeScript sources directly on Node 24 (type stripping): no build stage is
# needed for the code, only for production dependencies.

FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:24-slim AS runtime
ENV NODE_ENV=production
# Node's compile cache (stripped TypeScript and V8 code cache), filled at build time below so the
# container starts without loading the TypeScript stripper; read-only for the runtime user.
ENV NODE_COMPILE_CACHE=/app/.compile-cache
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --chown=root:root package.json ./
COPY --chown=root:root bin ./bin
COPY --chown=root:root src ./src
COPY --chown=root:root config ./config
# Importing every module once (--version loads them all) writes the compile cache.
RUN ["bin/peregrine.js", "--version"]
# The image's unprivileged user; the code and config are root-owned and read-only to it.
USER node
# The config `run` and `healthcheck` read: the image's own (data plane on 0.0.0.0:8080, admin API
# on the container's loopback, one upstream from PEREGRINE_UPSTREAM). Mount yours over it, or
# mount it elsewhere and point PEREGRINE_CONFIG at it (docs/deployment.md).
ENV PEREGRINE_CONFIG=config/container.yaml
# Data plane, and the admin API for when PEREGRINE_ADMIN=0.0.0.0:9901 opens it deliberately (it
# shows the configuration: publish it to the scraper's network only, never to the internet).
EXPOSE 8080 9901
# Reads the admin address from PEREGRINE_CONFIG, so it follows the config instead of repeating it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bin/peregrine.js", "healthcheck"]
STOPSIGNAL SIGTERM
# The launcher carries the Node flags (see its #! line); env finds the image's node.
ENTRYPOINT ["bin/peregrine.js"]
CMD ["run"]
