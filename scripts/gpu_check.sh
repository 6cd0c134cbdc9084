#!/usr/bin/env bash
# Every GPU benchmark in one prepared run, sized for a short lease of one CUDA GPU (see docs/gpu.md).
#
# Usage, from the project root:  scripts/gpu_check.sh OUT_DIR [IMAGENETTE_ARCHIVE]
#   OUT_DIR             receives one JSON file and one log per step, and gpu.csv (on the device tool: "$OUT")
#   IMAGENETTE_ARCHIVE  imagenette2-160.tgz; without it only the data-free steps run (corruptions on
#                       up-sampled digits, detector speed, digits training)
# Settings (environment): ZEAL_CHECK_DEVICE (default cuda; "cpu" dry-runs the script on a laptop),
#   ZEAL_CHECK_QUICK=1 (tiny sizes, for that dry run), ZEAL_CHECK_PARTS ("basic,imagenette" by default;
#   "imagenette" alone when the basic steps ran in an earlier call), STEP_TIMEOUT (s per step, default 240),
#   PYTHON.
#
# Needs python3 with torch, timm, safetensors, numpy, scipy, scikit-learn, pillow and pyyaml (the device
# image has them). frouros and umap-learn are optional: the detector step reports them as skipped.
set -uo pipefail

out=${1:?usage: scripts/gpu_check.sh OUT_DIR [IMAGENETTE_ARCHIVE]}
archive=${2:-}
py=${PYTHON:-python3}
device=${ZEAL_CHECK_DEVICE:-cuda}
quick=${ZEAL_CHECK_QUICK:-0}
parts=,${ZEAL_CHECK_PARTS:-basic,imagenette},
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1
work=${ZEAL_CHECK_WORK:-$(mktemp -d /tmp/zeal-gpu-check.XXXXXX)}
export ZEAL_DATA_DIR=$work/data ZEAL_MODELS_DIR=$work/models ZEAL_STATE_DIR=$work/state
mkdir -p "$out" "$ZEAL_DATA_DIR" "$ZEAL_MODELS_DIR" "$ZEAL_STATE_DIR"

failed=0
# step NAME COMMAND...: run one benchmark under a time limit; its stdout (one JSON object) goes to NAME.json.
step() {
  local name=$1 began rc
  shift
  echo "== $name: $*"
  began=$(date +%s)
  timeout "${STEP_TIMEOUT:-240}" "$@" >"$out/$name.json" 2>"$out/$name.log"
  rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - began)) s"
  if [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
    tail -n 5 "$out/$name.log"
  fi
  return "$rc"
}

# The JSON field KEY (a dotted path) of OUT_DIR/NAME.json, or nothing.
field() {
  "$py" -c 'import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    value = value[key]
print(value)' "$out/$1.json" "$2" 2>/dev/null
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.csv" 2>/dev/null ||
  echo "no nvidia-smi" >"$out/gpu.csv"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

if [ "$quick" = 1 ]; then
  corruption_n=32 mmd_n=200 digits_seconds=10 inette_seconds=20 retrain_epochs=1
else
  corruption_n=4096 mmd_n=1000 digits_seconds=60 inette_seconds=90 retrain_epochs=3
fi

if [[ $parts == *,basic,* ]]; then
# 1. Corruption throughput on the device (target >= 20,000 images/s at 160 px; the CPU reference is skipped).
step corruptions "$py" -m benchmarks corruptions --device "$device" --n "$corruption_n" --no-reference --json
# 2. MMD n x n, d = 512, 1000 permutations (target <= 0.1 s on a GPU) and the UMAP transform where installed.
step detectors_speed "$py" -m benchmarks detectors --device "$device" --skip-grid --json
# 3. Digits: ours only (the reference recipe is a CPU DataLoader: its figure is in README already).
step train_digits "$py" -m benchmarks train --dataset digits --device "$device" --skip-reference \
  --max-seconds "$digits_seconds" --json
fi

if [[ $parts == *,imagenette,* ]] && [ -n "$archive" ]; then
  # 4. Imagenette from the archive (copied where the data layer looks; its md5 names the prepared cache).
  cp "$archive" "$ZEAL_DATA_DIR/imagenette2-160.tgz"
  ZEAL_IMAGENETTE_MD5=$(md5sum "$archive" | cut -d' ' -f1)
  export ZEAL_IMAGENETTE_MD5
  step prepare "$py" -m zeal_core data prepare --dataset imagenette --json
  # 5. Images/s and time to 90 % (target: >= 30,000 images/s, >= 90 % val within 60 s), ours and reference.
  step train_imagenette "$py" -m benchmarks train --dataset imagenette --device "$device" \
    --max-seconds "$inette_seconds" --target 0.9 --json
  # 6. A registered model to adapt, then the retraining targets on gaussian_noise:3 (bn-adapt recovers
  #    >= 50 % of the lost accuracy; finetune >= 80 % with at most 2 points lost on clean data).
  if [ "$quick" = 1 ]; then
    step model "$py" -m zeal_core train --dataset imagenette --device "$device" --epochs 1 --image-size 32 --json
  else
    step model "$py" -m zeal_core train --dataset imagenette --device "$device" --json
  fi
  parent=$(field model version)
  if [ -n "$parent" ]; then
    step retrain_bn_adapt "$py" -m zeal_core retrain --model "$parent" --strategy bn-adapt \
      --drift gaussian_noise:3 --device "$device" --json
    step retrain_finetune "$py" -m zeal_core retrain --model "$parent" --strategy finetune \
      --drift gaussian_noise:3 --device "$device" --option "epochs=$retrain_epochs" --json
  fi
fi

echo "== done: $failed step(s) failed; outputs in $out"
exit $((failed > 0))
