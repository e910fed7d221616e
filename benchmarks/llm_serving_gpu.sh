#!/usr/bin/env bash
# llm_rank with a served model on one GPU, beside the same model in-process:
# parity, quality and workers sharing the server (benchmarks/llm_serving.py),
# each step under its own time limit, 10 minutes in all.
#
#   MODEL=/models/Qwen2.5-7B-Instruct benchmarks/llm_serving_gpu.sh
#
# MODEL is a local transformers directory (a GPU machine here reaches no hub).
# The server is `transformers serve` on CUDA with the project's decision
# config; set SERVER_URL to use one already running instead (decisio on vLLM,
# Ollama, or any System One server; sglang's /v1/decisions is a variant this
# client does not speak). Not run yet: no GPU has been lent with a 7-8B model.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MODEL:?set MODEL to a local instruction model directory}"
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
step() {  # step SECONDS NAME COMMAND...: one step, its own limit, its own log
    local limit=$1 name=$2
    shift 2
    echo "== $name (at most ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/llm_serving_gpu-$name.log" || echo "$name: stopped or failed"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'"
url=()
if [ -n "${SERVER_URL:-}" ]; then url=(--url "$SERVER_URL" --served-model "${SERVED_MODEL:-$MODEL}"); fi
# 1. parity (20 documents, 30 candidates), 2. quality (30 + 50 documents), 3. scale
step 150 parity python3 benchmarks/llm_serving.py --model "$MODEL" --device cuda \
    --docs 20 --skip quality,scale "${url[@]}"
step 300 quality python3 benchmarks/llm_serving.py --model "$MODEL" --device cuda \
    --docs 50 --calibration-docs 30 --skip scale "${url[@]}"
step 150 scale python3 benchmarks/llm_serving.py --model "$MODEL" --device cuda \
    --docs 40 --skip quality --workers 1,2,4 "${url[@]}"
