"""Write docs/results/*.md from a real run's outputs (see benchmarks/real_run.sh).

Usage: python benchmarks/report_real_run.py WORK_DIR DOCS_RESULTS_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (3 decimals), without extra dependencies."""
    def cell(value):
        return f"{value:.3f}" if isinstance(value, float) else ("—" if value is None else str(value))

    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index)] + [cell(v) for v in row]) + " |")
    return "\n".join(lines)


def main(work: Path, docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    rows = []
    for details_file in sorted((work / "models").glob("*/training_details.json")):
        d = json.loads(details_file.read_text())
        rows.append(f"| {d['locale']} | {d['train_examples']} | {d['steps']} | {d['dev_accuracy']:.3f} | {d['seconds']:.0f} |")
    matrix = pd.read_csv(work / "nxn" / "evaluation_matrix.csv", index_col="source")
    first = json.loads((work / "nxn" / "nxn_details.json").read_text())
    rerun = json.loads((work / "nxn-rerun" / "nxn_details.json").read_text())
    baselines = pd.read_csv(work / "nxn" / "baselines.csv", index_col="target")
    cell_seconds = [v for k, v in first["seconds_per_cell"].items()]
    lines = [
        "# SIB-200 with multilingual-e5-small: fine-tuning and the N×N zero-shot matrix",
        "",
        "Made by `benchmarks/real_run.sh` on the development machine (2 CPU cores, no GPU):",
        "multilingual-e5-small (118M parameters, built by `../shared/tools/build-e5-small`),",
        "fine-tuned with `mu train` for 3 epochs, batch 16, max length 96, learning rate 5e-5, frozen",
        "embeddings, seed 0, on each language's 701 SIB-200 training sentences; evaluated with `mu nxn`",
        "on each language's 204 test sentences.",
        "",
        "## Fine-tuning",
        "",
        "| locale | train examples | steps | dev accuracy | seconds |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "(The first models trained while other benchmarks shared the two cores; the later rows show the",
        "time of a model on an otherwise idle machine.)",
        "",
        "## N×N test accuracy (rows: source model, columns: target language)",
        "",
        markdown(matrix),
        "",
        "## Baselines",
        "",
        markdown(baselines),
        "",
        "## Timings",
        "",
        f"- N×N: {first['cells']} cells in {first['wall_seconds']:.0f} s wall "
        f"({sum(cell_seconds) / len(cell_seconds):.1f} s per cell on average, model loading included),",
        f"  {first['forward_passes']} forward passes.",
        f"- Rerun with the logits cache: {rerun['cells']} cells in {rerun['wall_seconds']:.1f} s, "
        f"{rerun['forward_passes']} forward passes, {rerun['cache_hits']} cache hits.",
        "",
    ]
    (docs / "nxn-sib200-e5.md").write_text("\n".join(lines), encoding="utf-8")

    cold = json.loads((work / "ensembles-cold" / "comparison.json").read_text())
    warm = json.loads((work / "ensembles-warm" / "comparison.json").read_text())
    table = (work / "ensembles-warm" / "comparison.md").read_text()
    (docs / "ensembles-sib200-e5.md").write_text("\n".join([
        "# URIEL-guided ensembles on SIB-200 (multilingual-e5-small, 8 languages)",
        "",
        "Made by `benchmarks/real_run.sh`: `mu compare-ensembles` over the 8 fine-tuned models of",
        "[nxn-sib200-e5.md](nxn-sib200-e5.md), every language as a target, sources selected by the",
        "uriel weighting (`--num-languages 5 --top-k 20 --sinkhorn-iters 20`; only the other 7",
        "languages have models, and a target keeps those among its top-20 URIEL neighbours).",
        "",
        table,
        f"Wall time: {cold['wall_seconds']:.0f} s cold ({cold['forward_passes']} forward passes), "
        f"{warm['wall_seconds']:.1f} s warm ({warm['forward_passes']} forward passes, {warm['cache_hits']} cache hits).",
        "",
    ]), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
