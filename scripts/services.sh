#!/usr/bin/env bash
# Makes sure the services the tests need answer on loopback, starting them
# (and installing them from Debian's packages, as root) when they do not.
# Idempotent: a service that already answers is left alone. `.ci/run`
# calls it; run it by hand before `cargo test` on a fresh machine.
#
# Redis on 127.0.0.1:6379 (the `redis` limit backend's tests), keeping
# nothing on disk. NATS with JetStream on 127.0.0.1:4222 (`[audit.nats]`);
# the NATS tests start their own nats-server (users and permissions of
# their own, a free port), so its binary must be installed.
set -euo pipefail

redis_answers() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
  else
    # No client yet: a bare PING over bash's /dev/tcp, bounded in time.
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6379 && printf "PING\r\n" >&3 && read -r line <&3 && [[ $line == +PONG* ]]' 2>/dev/null
  fi
}

ensure_redis() {
  if redis_answers; then
    echo "redis: answering on 127.0.0.1:6379"
    return
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis: installing redis-server (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
  fi
  echo "redis: starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  # Up to 10 s (50 × 0.2 s) for it to accept and answer.
  for _ in $(seq 50); do
    if redis_answers; then
      echo "redis: answering on 127.0.0.1:6379"
      return
    fi
    sleep 0.2
  done
  echo "redis: FAILED: redis-server was started but 127.0.0.1:6379 did not answer PING within 10 s" >&2
  exit 1
}

nats_answers() {
  # The server greets every client with an INFO line.
  timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && read -r line <&3 && [[ $line == INFO* ]]' 2>/dev/null
}

ensure_nats() {
  if ! command -v nats-server >/dev/null 2>&1; then
    echo "nats: installing nats-server (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nats-server >/dev/null
  fi
  if nats_answers; then
    echo "nats: answering on 127.0.0.1:4222"
    return
  fi
  echo "nats: starting nats-server with JetStream on 127.0.0.1:4222"
  mkdir -p /var/lib/nats-server
  nohup nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server >/dev/null 2>&1 &
  # Up to 10 s (50 × 0.2 s) for it to accept and greet.
  for _ in $(seq 50); do
    if nats_answers; then
      echo "nats: answering on 127.0.0.1:4222"
      return
    fi
    sleep 0.2
  done
  echo "nats: FAILED: nats-server was started but 127.0.0.1:4222 did not answer within 10 s" >&2
  exit 1
}

ensure_redis
ensure_nats
