#!/usr/bin/env bash
# Language adapters as merge sources (docs/results/adapters/, issue #17): a LoRA adapter of
# multilingual-e5-small per source language of the real grid (rank 8 on query and value, the
# head and the pooler trained whole; 10 epochs at 2e-3, 2 to 4 minutes each on 2 cores), then
# benchmarks/specs/adapters-sib200-e5.yaml with `mu experiment run`, then `mu report`, then the
# comparison with the real grid's whole-model cells (benchmarks/results/sib200-e5), the
# merge-time and storage figures, and an adapter's training cost against a whole fine-tuning's,
# side by side. Every step resumes: trained adapters are skipped, the grid computes only the
# cells without a result. Usage: benchmarks/adapters.sh [WORK_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export MU_WORK=${1:-/tmp/real}
data=$here/../../shared/data/sib200
mkdir -p "$MU_WORK/adapters"
[ -d "$MU_WORK/e5" ] || "$here/../../shared/tools/build-e5-small" "$MU_WORK/e5"
mu train --base-model "$MU_WORK/e5" --dataset sib200 --data-dir "$data" \
   --locales en-US,de-DE,fr-FR,es-ES,ru-RU,hi-IN,ar-SA,zh-CN,ja-JP,sw-KE,tr-TR,id-ID \
   --output-dir "$MU_WORK/adapters" --model-pattern "e5-small_sib200_lora_{locale}" --epochs 10 --batch-size 16 \
   --max-length 96 --learning-rate 2e-3 --adapter lora --lora-rank 8 --lora-alpha 16 --no-progress
mu experiment run "$here/specs/adapters-sib200-e5.yaml" --output "$here/results/adapters-sib200-e5" --no-progress
cd "$here/.."
mu report benchmarks/results/adapters-sib200-e5 --output docs/results/adapters --overwrite
python3 benchmarks/adapters_summary.py benchmarks/results/adapters-sib200-e5 benchmarks/results/sib200-e5 \
   "$MU_WORK" docs/results/adapters
python3 benchmarks/adapter_training_cost.py --base-model "$MU_WORK/e5" --data-dir "$data" --locales de-DE,sw-KE \
   --epochs 1 --out "$MU_WORK/adapter-cost"
