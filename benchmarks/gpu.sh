#!/usr/bin/env bash
# GPU conformance, then speed, for benchmarks/README.md, on one card, in under 8 minutes. From the repo root:
#   pip download --no-deps -d .whl torch-lucent==0.1.8 kornia==0.4.1     # here, once (.whl/ is git-ignored)
#   then on the device: bash benchmarks/gpu.sh        (carry: .whl; the device's own torch, torchvision and timm)
# The package itself travels with the working tree (PYTHONPATH below), not installed.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_WAIT_POLICY=PASSIVE
python -m pip install --quiet --no-deps .whl/*.whl 2>/dev/null || echo "torch-lucent not installed: lucent columns stay empty"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
status=0
# 1. conformance: the architecture sample in auto/fp32/bf16, an ensemble, the device-side non-finite flag,
#    a batched atlas, the toolbox smoke, compiled steps and CUDA graphs (about 2-3 minutes)
timeout 300 python benchmarks/gpu_conformance.py --device cuda || status=1
# 2. speed: compiled step vs floor vs torch-lucent, fp32 vs bf16, batch 1 and 16; atlas channels/s
timeout 240 python benchmarks/bench_gpu.py --device cuda --steps 50 || status=1
exit $status
