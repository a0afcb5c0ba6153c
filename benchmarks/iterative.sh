#!/usr/bin/env bash
# Iterative training against one-shot merges (docs/results/iterative/): multilingual-e5-small
# fine-tuned on SIB-200 for 4 source languages × 6 epochs (the one-shot sources), then
# benchmarks/specs/iterative-sib200-e5.yaml with `mu experiment run`, then `mu report`.
# Every step resumes: trained models are skipped, finished cells are kept (committed in
# benchmarks/results/iterative-sib200-e5), and an iterative cell that was killed continues
# from its last checkpoint. Usage: benchmarks/iterative.sh [WORK_DIR]   (default /tmp/real)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export MU_WORK=${1:-/tmp/real}
data=$here/../../shared/data/sib200
mkdir -p "$MU_WORK/oneshot"
[ -d "$MU_WORK/e5" ] || "$here/../../shared/tools/build-e5-small" "$MU_WORK/e5"
mu train --base-model "$MU_WORK/e5" --dataset sib200 --data-dir "$data" --locales en-US,es-ES,ru-RU,hi-IN \
   --output-dir "$MU_WORK/oneshot" --model-pattern "e5-small_sib200_{locale}" --epochs 6 --batch-size 16 \
   --max-length 96 --learning-rate 5e-5 --freeze-embeddings --no-progress
mu experiment run "$here/specs/iterative-sib200-e5.yaml" --output "$here/results/iterative-sib200-e5" --no-progress
cd "$here/.." && mu report benchmarks/results/iterative-sib200-e5 --output docs/results/iterative --overwrite
