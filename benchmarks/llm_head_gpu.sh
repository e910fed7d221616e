#!/usr/bin/env bash
# llm_head on one CUDA GPU, unattended, within 10 minutes: LoRA and QLoRA
# (bitsandbytes 4-bit) with gemma-3-270m on kirjastonhoitaja, full texts
# (512 tokens) and more epochs than on CPU, beside tfidf and xmc; then the
# same training for makupalat's 2.4k classes. Each run prints its table, the
# per-epoch validation curve and seconds, and peak memory; results land in
# benchmarks/results/llm_head_lora-<dataset>-gpu-<mode>.json.
#
#     bash benchmarks/llm_head_gpu.sh            # needs: pip install -e '.[all,gpu]'
#
# CI never runs this. Each step has its own time limit, so that one slow step
# cannot take the whole loan.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || {
  echo "no CUDA GPU visible: this script is for a GPU machine" >&2
  exit 2
}
python - <<'PY'
import torch, importlib.util
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "bitsandbytes", importlib.util.find_spec("bitsandbytes") is not None)
PY

run() {  # seconds, then the benchmark's arguments
  local limit=$1
  shift
  timeout "$limit" python benchmarks/llm_head_lora.py --device cuda --no-fusion "$@"
  echo "exit $? after: $*"
}

# one run per mode: a missing bitsandbytes stops qlora alone
run 200 --dataset kirjastonhoitaja --modes lora --max-length 512 --epochs 6 --tag gpu-lora
run 200 --dataset kirjastonhoitaja --modes qlora --max-length 512 --epochs 6 --tag gpu-qlora
run 150 --dataset ykl-makupalat --modes lora --max-length 128 --epochs 3 --tag gpu-lora
nvidia-smi --query-gpu=memory.used,memory.total --format=csv
