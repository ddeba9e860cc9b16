#!/usr/bin/env bash
# GPU figures for benchmarks/README.md, on one card, in under 8 minutes. Run on the device machine from the repo root:
#   pip download --no-deps -d .whl torch-lucent==0.1.8 kornia==0.4.1     # here, once (.whl/ is git-ignored)
#   then on the device: bash benchmarks/gpu.sh        (carry: .whl)
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_WAIT_POLICY=PASSIVE
python -m pip install --quiet --no-deps .whl/*.whl 2>/dev/null || echo "torch-lucent not installed: lucent columns stay empty"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python benchmarks/bench_gpu.py --device cuda --steps 50
python benchmarks/bench_atlas.py --no-cpu --gpu-model torchvision:resnet50 --gpu-layer layer4 --gpu-steps 16 \
    --gpu-batches 1,4,16,64
