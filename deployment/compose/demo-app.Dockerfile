# syntax=docker/dockerfile:1
# The demo services of deployment/compose and deployment/kubernetes: examples/mesh/app.ts,
# instrumented with OpenTelemetry's Node SDK (examples/mesh/instrument.ts), as users instrument
# theirs. Build from the repository root:
#   docker build -f deployment/compose/demo-app.Dockerfile -t peregrine-demo-app .
#
# The SDK is a devDependency of Peregrine (the gateway does not use it), so this image installs the
# lockfile with its dev dependencies (`npm ci`, install scripts off: nothing here needs them).
# That keeps the SDK at the versions the tests run with, at the cost of a larger image: it is a
# demo, not something to base a service on.
FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --include=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY examples/mesh ./examples/mesh
USER node
ENTRYPOINT ["node", "--import", "./examples/mesh/instrument.ts", "examples/mesh/app.ts"]
