#!/usr/bin/env bash
# The real grid (docs/results/grid/): multilingual-e5-small fine-tuned on SIB-200 for 12
# languages, then benchmarks/specs/sib200-e5.yaml (every SIB-200 language as a target) with
# `mu experiment run`, then `mu report`. Every step resumes: trained models are skipped, the
# grid computes only the cells without a result in benchmarks/results/sib200-e5 (committed),
# so a later session (or a rerun after a kill) picks up where the last one stopped.
# Usage: benchmarks/real_grid.sh [WORK_DIR]   (default /tmp/real; the models live there)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export MU_WORK=${1:-/tmp/real}
data=$here/../../shared/data/sib200
locales=en-US,de-DE,fr-FR,es-ES,ru-RU,hi-IN,ar-SA,zh-CN,ja-JP,sw-KE,tr-TR,id-ID
mkdir -p "$MU_WORK/models"
[ -d "$MU_WORK/e5" ] || "$here/../../shared/tools/build-e5-small" "$MU_WORK/e5"
mu train --base-model "$MU_WORK/e5" --dataset sib200 --data-dir "$data" --locales "$locales" \
   --output-dir "$MU_WORK/models" --model-pattern "e5-small_sib200_{locale}" --epochs 3 --batch-size 16 \
   --max-length 96 --learning-rate 5e-5 --freeze-embeddings --no-progress
mu experiment run "$here/specs/sib200-e5.yaml" --output "$here/results/sib200-e5" --no-progress
mu report "$here/results/sib200-e5" --output "$here/../docs/results/grid" --overwrite
