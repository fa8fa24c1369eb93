#!/usr/bin/env bash
# GPU check: the CUDA tests and the three benchmarks at release sizes on one accelerator.
#
# Run from anywhere on a machine with a CUDA build of PyTorch installed in the environment
# (PYTHON, default .venv/bin/python) and the repository installed (pip install -e .):
#     bash scripts/benchmark/gpu_check.sh            # results in work/benchmarks/gpu/
# Budget: under 8 minutes in all on a current data-centre GPU; every part has its own time limit
# and a part that runs out is reported, the others still run. The printed tables and the JSON
# files in the output folder are what the README's GPU section quotes.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-work/benchmarks/gpu}
mkdir -p "$OUT"
status=0

run() {  # run LIMIT_SECONDS NAME COMMAND...: one part, its output in OUT/NAME.log
    local limit=$1 name=$2
    shift 2
    echo "== $name (limit ${limit} s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || status=1
}

"$PY" - <<'PYEOF' || exit 1
import torch
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible to PyTorch: install a CUDA build of torch first")
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}")
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/gpu.txt"

# the CUDA tests (skipped on CPU machines) and the device-agnostic speed-path tests
run 60 tests "$PY" -m pytest -q -p no:cacheprovider tests/test_speed_paths.py
# queries and meshing at release sizes (dense up to 128^3, coarse-to-fine at 128^3 and 256^3, 3 runs)
run 120 speed "$PY" scripts/benchmark/speed.py --device cuda --mesh_repeats 3 --out "$OUT/speed.json"
# one step, then the whole release-protocol fit (1000 steps, 256^3 meshes of 8 expressions) with ours
# and, 250 steps, the comparison with the straightforward loop
run 150 fitting_speed "$PY" scripts/benchmark/fitting_speed.py --device cuda --whole_fit_variants ours ours_fast \
    --out "$OUT/fitting_speed.json"
run 60 fitting_compare "$PY" scripts/benchmark/fitting_speed.py --device cuda --no_step --whole_fit_steps 250 \
    --out "$OUT/fitting_compare.json"
# the quality benchmark's quick preset with the shipped models (fits, meshes and evaluates on the GPU)
run 80 quality "$PY" scripts/benchmark/quality.py --quick --device cuda --experiment_dir pretrained/synthetic_cpu \
    --train never --out "$OUT/quality"
echo "results in $OUT"
exit $status
