#!/usr/bin/env bash
# Every accelerator measurement in one unattended call (about 9 minutes at most), for a
# borrowed GPU/TPU machine whose image has jax, flax, optax, orbax and torch:
#   bash benchmarks/device_run.sh [OUTDIR]        (QUICK=1: the CPU smoke version)
# Runs, each under its own time limit so one slow part cannot starve the rest:
#   1. the versions and devices (stops here when the package does not import);
#   2. benchmarks/accelerator.py (JAX: train step, saliency, repair step; bf16 and f32);
#   3. benchmarks/accelerator_torch.py (the same training step in PyTorch);
#   4. the fast tests of the precision, repair and Scissorhands modules on the device;
#   5. benchmarks/population.py with K = 256 models (vmap) against 32 fits.
# The JSON results land in benchmarks/results/ and, with the logs, in OUTDIR.
set -u -o pipefail
out=${1:-${OUT:-/tmp/device_run}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
quick=${QUICK:+--quick}
$py - <<'PY' 2>&1 | tee "$out/env.txt" || exit 1
import importlib, jax
for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "etils", "numpy", "torch"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as err:  # report and go on: torch is optional
        print(name, "missing:", err)
print("devices", jax.devices())
import scissorhands_jax as shs  # fails the run here when the package cannot import
print("scissorhands_jax", shs.__file__)
PY
timeout 270 $py benchmarks/accelerator.py $quick --batches 1024 256 --budget 170 \
    2>&1 | tee "$out/accelerator.log"
timeout 150 $py benchmarks/accelerator_torch.py $quick --batches 1024 256 --budget 100 \
    2>&1 | tee "$out/accelerator_torch.log"
timeout 50 $py -m pytest -q -x -m "not slow" -p no:cacheprovider tests/test_precision.py \
    tests/test_projection.py tests/test_scissorhands.py 2>&1 | tail -15 | tee "$out/pytest.log"
if [ -z "$quick" ]; then
    timeout 70 $py benchmarks/population.py --num-models 256 --fit-models 32 --epochs 10 \
        --repeats 2 --backends vmap --suffix k256 2>&1 | tail -20 | tee "$out/population.log"
fi
cp benchmarks/results/accelerator_*.json benchmarks/results/population_*k256*.json "$out"/ \
    2>/dev/null
ls -l "$out"
