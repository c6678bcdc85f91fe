#!/usr/bin/env bash
# The exact engine's determinism matrix on a GPU against CPU-encoded bitstreams, plus throughput
# (benchmarks/gpu_check.py says what is checked). At most 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # JAX on the GPU (needs the [gpu] extra: jax[cuda12])
#   bash benchmarks/gpu_check.sh --cpu      # the same checks with JAX on the CPU (tested here)
#   extra arguments go to gpu_check.py, e.g. --examples 4 --contexts 64
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if [[ "${1:-}" == "--cpu" ]]; then
  shift
  export JAX_PLATFORMS=cpu
else
  # Fail early and clearly when no GPU is visible: a CPU run is not a GPU check.
  "$PY" -c 'import jax, sys; sys.exit(0 if any(d.platform == "gpu" for d in jax.devices()) else
"no GPU visible to JAX: install the [gpu] extra on a GPU machine, or run with --cpu")'
fi
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
