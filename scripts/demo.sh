#!/usr/bin/env bash
# Set up nv-eval and run a real evaluation end to end on the embedded default:
# a local NATS server, the daemon and a local agent start by themselves; the agent deploys
# SmolLM2-135M with llama.cpp (CPU) once and runs three benchmarks against it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
unset NV_EVAL_NATS_URL
exec .venv/bin/nv-eval run --config-dir examples --config-name local_smollm2_process --follow "$@"
