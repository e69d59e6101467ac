#!/usr/bin/env bash
# Run the nv-eval test suite on this machine: set up (scripts/setup.sh), start the real
# services the tests use (dockerd, single-node Slurm, sshd on 127.0.0.1; NATS and the
# SmolLM2 server are started by the tests themselves), build the local images, run pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m[test]\033[0m %s\n' "$*" >&2; }

bash scripts/setup.sh

for svc in start-dockerd start-slurm start-sshd; do
  if [ -f "scripts/$svc.sh" ]; then
    log "$svc"
    bash "scripts/$svc.sh"
  fi
done
if [ -f scripts/build-images.sh ]; then
  log "building local images"
  bash scripts/build-images.sh
fi

log "pytest"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
log "ruff"
.venv/bin/ruff check .
lint=$?
set -e
if [ "$rc" -eq 5 ]; then
  log "pytest collected no tests"
  exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"
exit "$lint"
