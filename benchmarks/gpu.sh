#!/usr/bin/env bash
# GPU checks and throughput, as one prepared script for a CUDA machine:
#   1. the CUDA tests (pytest -m cuda),
#   2. training-step clips/s (AMP bf16, channels_last, ResNet-50 at 224, 8 segments, batch 32),
#   3. 25x10 test videos/s,
#   4. with more than one GPU: clips/s on 1 GPU vs all GPUs through `tsnctl`'s DDP launcher,
#   5. the data path with batches normalized on the GPU vs on the CPU (`tsnctl bench data`),
#   6. the GPU data path (data.decode_device=cuda: nvJPEG decode, crops on the GPU) vs the CPU worker path,
#   7. onnxruntime latency per 25x10 video on CPU, CUDA and TensorRT, fp32 and fp16
#      (CUDA/TensorRT need the onnxruntime-gpu package; without it those rows say so).
# Synthetic tensors, nothing downloaded. Without a GPU it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

gpus=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$gpus" -eq 0 ]; then
    echo "benchmarks/gpu.sh: no CUDA GPU on this machine; nothing to run"
    exit 0
fi
"$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0))"

echo "== pytest -m cuda"
"$PY" -m pytest -q -m cuda

echo "== training step"
"$PY" benchmarks/gpu_bench.py train --amp bf16 --batch 32 --num-seg 8
echo "== test (25 segments x 10 crops)"
"$PY" benchmarks/gpu_bench.py test --amp bf16

if [ "$gpus" -gt 1 ]; then
    echo "== multi-GPU scaling ($gpus GPUs)"
    "$PY" benchmarks/gpu_bench.py scaling --amp bf16 --batch 32 --num-seg 8
fi

TSNCTL=("$PY" -c "from tsnctl.cli import main; main()")
echo "== data path: batches normalized on the GPU, then on the CPU"
"${TSNCTL[@]}" bench data --formats frames --modes train,test --device cuda
"${TSNCTL[@]}" bench data --formats frames --modes train,test --device cpu
echo "== GPU data path (decode and crops on the GPU) vs the CPU worker path"
timeout 300 "${TSNCTL[@]}" bench data --formats frames,video --modes train,test --decode-device cuda --min-time 1 \
    || echo "bench data --decode-device cuda: stopped with exit status $?"
echo "== onnxruntime latency"
"$PY" benchmarks/onnx_latency.py --repeats 5
