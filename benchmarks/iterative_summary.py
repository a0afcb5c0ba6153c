"""The iterative-training evidence in figures: per target, the iterative cell beside the one-shot
merges and baselines; per cycle, wall time and peak memory; and the learning curves (PNG).

    python benchmarks/iterative_summary.py benchmarks/results/iterative-sib200-e5 docs/results/iterative

Prints Markdown tables (pasted into docs/results/iterative.md) and writes curves.png into
the second folder. Reads only the committed cell files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from merginguriel_core.experiments.results import load_cells
from merginguriel_core.plots import colours, new_figure, save_png


def main(results: Path, output: Path) -> None:
    cells = {record["cell"]: record for record in load_cells(results)}
    targets = sorted({record["target"] for record in cells.values()})
    iterative = {t: cells.get(f"{t}/iterative-linear@softmax") for t in targets}
    methods = ["iterative-linear@softmax", "merge-linear@softmax", "merge-ties@softmax", "merge-linear@average",
               "baseline-english", "baseline-closest", "baseline-oracle"]
    print("| target | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for target in targets:
        values = []
        for method in methods:
            record = cells.get(f"{target}/{method}")
            ok = record is not None and record.get("status") == "done"
            values.append(f"{record['metrics']['accuracy']:.4f}" if ok else "—")
        print(f"| {target} | " + " | ".join(values) + " |")
    print()
    print("| target | cycle (epochs) | wall s | train s | checkpoint s | merge s | peak memory GiB | target dev accuracy of the merge |")
    print("|---|---|---|---|---|---|---|---|")
    for target, record in iterative.items():
        if record is None or record.get("status") != "done":
            continue
        merges = {m["epoch"]: m for m in record["iterative"]["merges"]}
        for cycle in record["iterative"]["cycles"]:
            first, last = cycle["epochs"]
            dev = merges.get(last, {}).get("target_dev_accuracy")
            dev_text = f"{dev:.4f}" if dev is not None else "—"
            print(f"| {target} | {first}-{last}{' (resumed)' if cycle.get('resumed') else ''} | {cycle['seconds']:.0f} | "
                  f"{cycle['train_seconds']:.0f} | {cycle['checkpoint_seconds']:.1f} | {cycle['merge_seconds']:.1f} | "
                  f"{cycle['peak_memory_bytes'] / 2**30:.2f} | {dev_text} |")
    _curves([(t, r) for t, r in iterative.items() if r is not None and r.get("status") == "done"], output / "curves.png")


def _curves(runs, path: Path) -> None:
    figure = new_figure(7, 4)
    axes = figure.add_subplot(1, 1, 1)
    for colour, (target, record) in zip(colours(len(runs)), runs):
        epochs = record["iterative"]["epochs"]
        axes.plot([e["epoch"] for e in epochs], [e["mean_dev_accuracy"] for e in epochs], color=colour,
                  label=f"{target}: sources' mean dev accuracy")
        merges = record["iterative"]["merges"]
        axes.plot([m["epoch"] for m in merges], [m["target_dev_accuracy"] for m in merges], "o--", color=colour,
                  label=f"{target}: the merge on the target's dev split")
    axes.set_xlabel("epoch")
    axes.set_ylabel("accuracy")
    axes.set_title("Iterative training: every 2 epochs the four models are merged")
    axes.legend(fontsize=6, loc="lower right")
    axes.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(figure, path)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
