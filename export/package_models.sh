#!/usr/bin/env bash
# Re-export the packaged models from their checkpoints and record their FER2013 test figures, as
# shipped in fer_edge/models/. Run from the repository root.
#   Usage: export/package_models.sh [tiny] [nano] [base]   (default: all three)
# The checkpoints are what the H200 session of 2026-11-30 brought back (docs/gpu-runs.md: call 2's
# tiny-d2 and tiny2, call 1's base), unpacked into runs/h200/; the manifests record their sha256.
#   TINY_CKPT=runs/h200/tiny-d2/best.pt  NANO_CKPT=runs/h200/tiny2/best.pt  BASE_CKPT=runs/h200/base/best.pt
#   DATA=../shared/datasets/fer2013
# TINY_MIN / BASE_MIN: each run's wall minutes on the GPU, data loading and final test included
# (docs/runs/h200-2026-11-30/session*.json: end_s - start_s).
set -euo pipefail
DATA=${DATA:-../shared/datasets/fer2013}
TINY_CKPT=${TINY_CKPT:-runs/h200/tiny-d2/best.pt}
NANO_CKPT=${NANO_CKPT:-runs/h200/tiny2/best.pt}
BASE_CKPT=${BASE_CKPT:-runs/h200/base/best.pt}
GPU=${GPU:-1x NVIDIA H200}
FER="${PYTHON:-python} -m fer_edge.cli"

record() {  # figures of every shipped artifact on test, plain and with each TTA mode
  for tta in none flip ten_crop; do
    $FER evaluate --model "fer_edge/models/$1" --data "$DATA" --split test --backend all --precision all \
      --tta "$tta" --threads 1 --record
  done
}

models=("$@")
[ ${#models[@]} -gt 0 ] || models=(tiny nano base)
for model in "${models[@]}"; do
  case $model in
    tiny)
      $FER export "$TINY_CKPT" --out fer_edge/models/tiny --name tiny --val "$DATA" \
        --trained-on "$GPU" --train-minutes "${TINY_MIN:-3.43}" --overwrite \
        --description "The packaged default: nano_fer_d (317k parameters), distilled from base, trained on one GPU by fer-edge train --recipe tiny --arch nano_fer_d."
      record tiny ;;
    nano)
      # The fastest point of the edge trade-off (docs/models.md): under 0.3x fer's time per crop.
      $FER export "$NANO_CKPT" --out fer_edge/models/nano --name nano --val "$DATA" \
        --trained-on "$GPU" --train-minutes "${NANO_MIN:-3.48}" --overwrite \
        --description "The fastest edge model: nano_fer (132k parameters), distilled from base, trained on one GPU by fer-edge train --recipe tiny."
      record nano ;;
    base)
      # ONNX INT8 (ONNX Runtime runs on every CPU) and ncnn FP16 (0.71x its time on AVX2 without VNNI,
      # docs/benchmarks.md), both gated against the FP32 ONNX built at export; no OpenVINO (its INT8
      # keeps the classifier in FP32: 10 MB more). The shipped bundle's checkpoint was never brought
      # back, so its ncnn/fp16 came from the shipped INT8 instead:
      #   fer-edge add-ncnn fer_edge/models/base --val "$DATA" --threads 1   (recorded in its manifest)
      $FER export "$BASE_CKPT" --out fer_edge/models/base --name base --val "$DATA" \
        --artifacts onnx/int8,ncnn/fp16 --trained-on "$GPU" --train-minutes "${BASE_MIN:-4.65}" --overwrite \
        --description "The accurate model: vgg_fer (5.1M parameters) trained on one GPU by fer-edge train --recipe base; ONNX INT8 for every CPU and ncnn FP16, faster on AVX2 without VNNI."
      record base ;;
    *) echo "unknown model $model (tiny, nano, base)" >&2; exit 2 ;;
  esac
done
