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
# Data plane and admin API. The admin API binds 127.0.0.1 by default; expose it on the pod network
# only deliberately (admin.address: 0.0.0.0:9901) and never publish it to the internet.
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9901/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
# The launcher carries the Node flags (see its #! line); env finds the image's node.
ENTRYPOINT ["bin/peregrine.js"]
CMD ["run", "--config", "config/gateway.yaml"]
