#!/usr/bin/env bash
# Target-aware merging on SIB-200 (docs/results/target-aware/): the 12 models of the real grid
# (trained by benchmarks/real_grid.sh's first step if missing, about 15 minutes), then
# benchmarks/specs/target-aware-sib200-e5.yaml with `mu experiment run`, then `mu report`.
# The cells it shares with the real grid (uriel and softmax merges and votes, baselines, N×N)
# are copied from benchmarks/results/sib200-e5 first: their definitions are the same, so the
# runner keeps them (--force takes the copied folder over for this spec). Every step resumes. Usage: benchmarks/target_aware.sh [WORK_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export MU_WORK=${1:-/tmp/real}
data=$here/../../shared/data/sib200
results=$here/results/target-aware-sib200-e5
mkdir -p "$MU_WORK/models"
[ -d "$MU_WORK/e5" ] || "$here/../../shared/tools/build-e5-small" "$MU_WORK/e5"
mu train --base-model "$MU_WORK/e5" --dataset sib200 --data-dir "$data" \
   --locales en-US,de-DE,fr-FR,es-ES,ru-RU,hi-IN,ar-SA,zh-CN,ja-JP,sw-KE,tr-TR,id-ID \
   --output-dir "$MU_WORK/models" --model-pattern "e5-small_sib200_{locale}" --epochs 3 --batch-size 16 \
   --max-length 96 --learning-rate 5e-5 --freeze-embeddings --no-progress
if [ ! -d "$results/cells" ]; then
  python3 - "$here/results/sib200-e5" "$results" <<'PY'
import shutil, sys
from pathlib import Path
grid, out = Path(sys.argv[1]), Path(sys.argv[2])
shared = {"merge-linear@uriel", "merge-linear@softmax", "vote-uriel_logits@uriel", "vote-uriel_logits@softmax",
          "baseline-own", "baseline-english", "baseline-closest", "baseline-oracle"}
for cell in sorted((grid / "cells").glob("*/*")):
    if cell.name in shared or cell.name.startswith("nxn-"):
        shutil.copytree(cell, out / "cells" / cell.parent.name / cell.name)
shutil.copy2(grid / "experiment.json", out / "experiment.json")  # taken over below (--force)
PY
fi
mu experiment run "$here/specs/target-aware-sib200-e5.yaml" --output "$results" --force --no-progress
cd "$here/.." && mu report benchmarks/results/target-aware-sib200-e5 --output docs/results/target-aware --overwrite
