#!/usr/bin/env bash
# Start dockerd if it is not running and wait (bounded) until `docker info` answers.
# Idempotent: a running daemon is left alone. No systemd here: dockerd runs detached,
# logging to ${DOCKERD_LOG:-/var/log/dockerd.log}. Exit 1 if not ready within
# ${DOCKERD_TIMEOUT:-30} seconds (the log's tail is printed).
set -euo pipefail
LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
TIMEOUT=${DOCKERD_TIMEOUT:-30}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "start-dockerd: dockerd not installed (apt-get install -y --no-install-recommends docker.io)" >&2
  exit 1
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
  # a stale pid file from a killed daemon blocks a new one
  $SUDO rm -f /var/run/docker.pid
  $SUDO sh -c "nohup dockerd >>'$LOG' 2>&1 </dev/null &"
fi
deadline=$((SECONDS + TIMEOUT))
until docker info >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "start-dockerd: dockerd not ready after ${TIMEOUT}s; last log lines:" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
  sleep 0.2
done
