#!/usr/bin/env bash
# The real run behind docs/results/nxn-sib200-e5.md and docs/results/ensembles-sib200-e5.md:
# multilingual-e5-small fine-tuned on SIB-200 for 8 languages, the N×N matrix, and the
# ensemble comparison, and the weighting comparison. About 60-70 minutes on 2 CPU cores. Usage: benchmarks/real_run.sh [WORK_DIR]
set -euo pipefail
work=${1:-/tmp/real}
data=${SIB200:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data/sib200}
locales=en-US,de-DE,fr-FR,ru-RU,hi-IN,sw-KE,zh-CN,ar-SA
pattern="e5-small_sib200_{locale}"
mkdir -p "$work/models"
[ -d "$work/e5" ] || "$(dirname "$0")/../../shared/tools/build-e5-small" "$work/e5"
mu train --base-model "$work/e5" --dataset sib200 --data-dir "$data" --locales "$locales" \
   --output-dir "$work/models" --model-pattern "$pattern" --epochs 3 --batch-size 16 --max-length 96 \
   --learning-rate 5e-5 --freeze-embeddings --no-progress
mu nxn --models "$work/models" --model-pattern "$pattern" --dataset sib200 --data-dir "$data" \
   --output "$work/nxn" --cache-dir "$work/cache" --overwrite --no-progress
mu nxn --models "$work/models" --model-pattern "$pattern" --dataset sib200 --data-dir "$data" \
   --output "$work/nxn-rerun" --cache-dir "$work/cache" --overwrite --no-progress
for pass in cold warm; do
  [ "$pass" = cold ] && cache="$work/cache-ensembles" && rm -rf "$cache"
  mu compare-ensembles --target-langs ${locales//,/ } --voting-methods majority weighted_majority soft uriel_logits \
     --models "$work/models" --model-pattern "$pattern" --dataset sib200 --data-dir "$data" \
     --num-languages 5 --cache-dir "$work/cache-ensembles" --output "$work/ensembles-$pass" --overwrite --no-progress
done
python "$(dirname "$0")/report_real_run.py" "$work" "$(dirname "$0")/../docs/results"
# Which weighting transfers best (docs/results/weightings/): the spec the runner executes.
MU_WORK="$work" mu experiment run "$(dirname "$0")/specs/weightings.yaml" --output "$work/weightings" --no-progress
mu report "$work/weightings" --output "$(dirname "$0")/../docs/results/weightings" --overwrite
