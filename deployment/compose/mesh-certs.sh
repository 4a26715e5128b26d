#!/bin/sh
# The mesh's development certificates for deployment/compose (docs/mesh.md, "Certificates for
# development"): a CA on first run (kept in its own volume, never mounted into a Peregrine
# process), then a fresh X.509-SVID for the gateway and each demo service on every run, handed to
# the image's user. Reissuing is rotation: running processes load the new files.
#
# Runs as the `mesh-certs` service of compose.yaml, in the Peregrine image; the test of the
# deployment files runs it too, with the variables pointing into a temporary directory.
set -eu

peregrine=${PEREGRINE:-bin/peregrine.js}
ca=${CA_DIR:-/ca}
out=${CERT_DIR:-/certs}
ttl=720h # 30 days: a demo left running keeps working; `docker compose up` reissues

if [ ! -f "$ca/ca.crt" ]; then
  "$peregrine" certs init --dir "$ca" --trust-domain peregrine.demo
fi
"$peregrine" certs issue --dir "$ca" --namespace edge --service gateway --ttl "$ttl" --out "$out/gateway"
for service in orders payments; do
  "$peregrine" certs issue --dir "$ca" --namespace demo --service "$service" --ttl "$ttl" --out "$out/$service"
done
chown -R "${CERT_OWNER:-1000:1000}" "$out"
