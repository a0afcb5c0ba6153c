"""The target-aware evidence in figures: each method that reads target text against the same
method under uriel and softmax, entropy_min against uriel_logits on the same sources, the
English and oracle baselines, the cost per target, and a PNG of the per-target gains.

    python benchmarks/target_aware_summary.py benchmarks/results/target-aware-sib200-e5 docs/results/target-aware

Prints Markdown tables (pasted into docs/results/target-aware.md) and writes gains.png into
the second folder. Reads only the committed cell files; the statistics are the report's
(paired bootstrap interval, Wilcoxon signed-rank test).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from merginguriel_core.experiments.report import paired_comparison
from merginguriel_core.experiments.results import load_cells
from merginguriel_core.plots import colours, new_figure, save_png

#: (method, what it is compared with) in the order the page shows them.
PAIRS = [
    ("merge-linear@adamerging", "merge-linear@softmax"),
    ("merge-linear@adamerging", "merge-linear@uriel"),
    ("merge-linear@representation", "merge-linear@softmax"),
    ("merge-linear@representation", "merge-linear@uriel"),
    ("merge-linear@representation-mix", "merge-linear@softmax"),
    ("merge-linear@representation-mix", "merge-linear@uriel"),
    ("vote-uriel_logits@representation", "vote-uriel_logits@softmax"),
    ("vote-uriel_logits@representation-mix", "vote-uriel_logits@softmax"),
    ("vote-entropy_min@uriel", "vote-uriel_logits@uriel"),
    ("vote-entropy_min@softmax", "vote-uriel_logits@softmax"),
]
METHODS = ["merge-linear@uriel", "merge-linear@softmax", "merge-linear@adamerging", "merge-linear@representation",
           "merge-linear@representation-mix", "vote-uriel_logits@uriel", "vote-uriel_logits@softmax",
           "vote-uriel_logits@representation", "vote-uriel_logits@representation-mix", "vote-entropy_min@uriel",
           "vote-entropy_min@softmax", "baseline-english", "baseline-oracle"]


def _accuracy(cells, target, method):
    record = cells.get(f"{target}/{method}")
    return record["metrics"]["accuracy"] if record is not None and record.get("status") == "done" else None


def main(results: Path, output: Path) -> None:
    cells = {record["cell"]: record for record in load_cells(results)}
    targets = sorted({record["target"] for record in cells.values()})
    print("| method | targets | mean accuracy | vs English (mean gain, wins/losses) |")
    print("|---|---|---|---|")
    for method in METHODS:
        values = {t: _accuracy(cells, t, method) for t in targets}
        done = {t: v for t, v in values.items() if v is not None}
        gains = [v - _accuracy(cells, t, "baseline-english") for t, v in done.items()
                 if _accuracy(cells, t, "baseline-english") is not None]
        wins, losses = sum(g > 0 for g in gains), sum(g < 0 for g in gains)
        mean = statistics.fmean(done.values()) if done else float("nan")
        print(f"| `{method}` | {len(done)} | {mean:.4f} | {100 * statistics.fmean(gains) if gains else float('nan'):+.2f}"
              f" pts, {wins}/{losses} |")
    print()
    print("| method | against | targets | mean gain (pts) | 95% interval | wins/ties/losses | Wilcoxon p |")
    print("|---|---|---|---|---|---|---|")
    gains_of = {}
    for method, against in PAIRS:
        gains = [a - b for t in targets if (a := _accuracy(cells, t, method)) is not None
                 and (b := _accuracy(cells, t, against)) is not None]
        gains_of[(method, against)] = gains
        c = paired_comparison(gains)
        if not c["n"]:
            continue
        print(f"| `{method}` | `{against}` | {c['n']} | {100 * c['mean_gain']:+.2f} | [{100 * c['ci_low']:+.2f}, "
              f"{100 * c['ci_high']:+.2f}] | {c['wins']}/{c['ties']}/{c['losses']} | {c['p']:.3g} |")
    print()
    print("| selection | cells | selection seconds per target: median (min–max) |")
    print("|---|---|---|")
    for selection in ("adamerging", "representation", "representation-mix"):
        seconds = [r["timings"]["select"] for r in cells.values()
                   if r.get("selection") == selection and r.get("kind") == "merge" and r.get("status") == "done"]
        if seconds:
            print(f"| `{selection}` | {len(seconds)} | {statistics.median(seconds):.1f} ({min(seconds):.1f}–"
                  f"{max(seconds):.1f}) |")
    entropy = []  # from the note adamerging leaves: "adamerging: mean entropy B -> A on N sentences, ..."
    for record in cells.values():
        for note in record.get("notes") or () if record.get("selection") == "adamerging" else ():
            if note.startswith("adamerging: mean entropy "):
                before, _, after = note.split("mean entropy ")[1].split(" on ")[0].partition(" -> ")
                entropy.append((float(before), float(after)))
    if entropy:
        print(f"\nadamerging lowered the mean dev-text entropy on {sum(a < b for b, a in entropy)} of {len(entropy)} "
              f"targets (mean {statistics.fmean(b for b, _ in entropy):.3f} -> {statistics.fmean(a for _, a in entropy):.3f} nats)")
    _gains(targets, cells, output / "gains.png")


def _gains(targets, cells, path: Path) -> None:
    """Per target, each method's accuracy minus the same method under softmax (points)."""
    shown = [("merge-linear@adamerging", "merge-linear@softmax"), ("merge-linear@representation", "merge-linear@softmax"),
             ("merge-linear@representation-mix", "merge-linear@softmax"),
             ("vote-entropy_min@softmax", "vote-uriel_logits@softmax")]
    figure = new_figure(max(8.0, 0.18 * len(targets) + 2), 4.5)
    axes = figure.add_subplot(1, 1, 1)
    for offset, (colour, (method, against)) in enumerate(zip(colours(len(shown)), shown)):
        xs, ys = [], []
        for i, target in enumerate(targets):
            a, b = _accuracy(cells, target, method), _accuracy(cells, target, against)
            if a is not None and b is not None:
                xs.append(i + (offset - 1.5) * 0.18)
                ys.append(100 * (a - b))
        axes.scatter(xs, ys, s=14, color=colour, label=f"{method} − {against}")
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(targets)), targets, rotation=90, fontsize=6)
    axes.set_ylabel("accuracy gain (points)")
    axes.set_title("Target-aware methods against the same method under softmax, per SIB-200 target", fontsize=9)
    axes.legend(fontsize=6, loc="lower left")
    figure.tight_layout()
    output = Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_png(figure, output)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
