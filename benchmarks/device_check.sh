#!/usr/bin/env bash
# tests/test_cuda.py on a GPU machine without this environment, from the repository root, with the kit
# that benchmarks/device_kit.py gathered in .device/ (S2D_DEVICE_KIT names another: tiny models, pinned
# wheels; without wheels the machine's own packages run). Copy the repository with .device/ to the GPU
# machine and run "bash benchmarks/device_check.sh [log folder]" there. Log, JUnit XML and versions go
# to the folder named, else to $S2D_LOG_DIR when it is set, else to results/device/.
set -uo pipefail
LOG_DIR=${1:-${S2D_LOG_DIR:-results/device}}
KIT=${S2D_DEVICE_KIT:-.device}
mkdir -p "$LOG_DIR"
if compgen -G "$KIT/whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/s2d-site \
    "$KIT"/whl/*.whl || exit 1
  export PYTHONPATH="/tmp/s2d-site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
[ -d "$KIT/tiny-llama" ] && export S2D_TINY_MODELS="$(cd "$KIT" && pwd)"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  python3 -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count(), '| transformers', transformers.__version__, '| peft', peft.__version__, '| accelerate', accelerate.__version__)"
} 2>&1 | tee "$LOG_DIR/versions.txt"
python3 -m pytest tests/test_cuda.py -v -p no:cacheprovider --junitxml="$LOG_DIR/test_cuda.xml" 2>&1 | tee "$LOG_DIR/test_cuda.log"
exit "${PIPESTATUS[0]}"
