#!/usr/bin/env bash
# Build the local images the Docker executor uses (no registry needed): the harness image and
# the llama.cpp deployment image. Layers are cached by content hash; a rebuild takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/nv-eval images build --harness --llamacpp
