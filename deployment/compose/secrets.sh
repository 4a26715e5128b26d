#!/bin/sh
# The secrets of deployment/compose, made on the first `docker compose up` and kept in their
# volumes (nothing secret is in the repository): the Redis password, and the token of every
# Peregrine admin API. Each volume is mounted only where it is needed (compose.yaml), each file
# readable only by the user that reads it.
#
#   redis-secret/password     the gateway (redis.password) and Redis's health check
#   redis-secret/redis.conf   Redis (`requirepass`)
#   admin-token/token         the gateway and the sidecars (admin.auth.token), Prometheus
#
# Runs as the `secrets` service of compose.yaml, in the Peregrine image; the test of the
# deployment files runs it too, with the variables pointing into a temporary directory. To
# rotate, remove the volumes (`docker compose down -v`) or a file, and `docker compose up` again.
set -eu

redis=${REDIS_SECRET_DIR:-/redis-secret}
admin=${ADMIN_TOKEN_DIR:-/admin-token}
peregrine_user=${PEREGRINE_OWNER:-1000:1000} # `node` in the Peregrine image
redis_user=${REDIS_OWNER:-999:1000}          # `redis` in the Redis image
token_owner=${TOKEN_OWNER:-1000:65534}       # the Peregrine user; the group of Prometheus (`nobody`)

umask 077
random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

if [ ! -s "$redis/password" ]; then
  random >"$redis/password"
  printf 'requirepass %s\n' "$(cat "$redis/password")" >"$redis/redis.conf"
fi
if [ ! -s "$admin/token" ]; then
  random >"$admin/token"
fi

chown "$peregrine_user" "$redis/password"
chmod 0400 "$redis/password"
chown "$redis_user" "$redis/redis.conf"
chmod 0400 "$redis/redis.conf"
chown "$token_owner" "$admin/token"
chmod 0440 "$admin/token"
chmod 0755 "$redis" "$admin"
