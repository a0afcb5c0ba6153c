"""The adapter evidence in figures (docs/results/adapters.md): merged LoRA adapters against the
English adapter and the closest language's (TIPA's baselines), against the same merge of whole
fine-tuned models (the real grid), what truncating a TIES merge to rank 8 costs, and the costs:
training time, trainable parameters, storage per source, merge time.

    python benchmarks/adapters_summary.py ADAPTER_RESULTS GRID_RESULTS WORK_DIR OUTPUT_DIR

ADAPTER_RESULTS: benchmarks/results/adapters-sib200-e5; GRID_RESULTS: the whole-model grid
(benchmarks/results/sib200-e5); WORK_DIR: where benchmarks/adapters.sh trained (e5/,
adapters/). Prints Markdown tables (pasted into docs/results/adapters.md) and writes
gains.png into OUTPUT_DIR. The statistics are the report's (paired bootstrap interval,
Wilcoxon signed-rank test); the merge timings are measured here, side by side in one run.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from merginguriel_core.experiments.report import paired_comparison
from merginguriel_core.experiments.results import load_cells
from merginguriel_core.plots import colours, new_figure, save_png

#: The methods both grids hold, in the order the page shows them.
SHARED = ["merge-linear@uriel", "merge-linear@softmax", "merge-linear@average", "merge-ties@softmax",
          "vote-soft@uriel", "vote-soft@softmax", "vote-uriel_logits@uriel", "vote-uriel_logits@softmax",
          "baseline-english", "baseline-closest", "baseline-oracle", "baseline-own"]
ADAPTER_ONLY = ["merge-ties+adapter8@softmax"]


def _accuracy(cells, target, method):
    record = cells.get(f"{target}/{method}")
    return record["metrics"]["accuracy"] if record is not None and record.get("status") == "done" else None


def _row(method: str, against: str, gains: list[float]) -> str | None:
    c = paired_comparison(gains)
    if not c["n"]:
        return None
    return (f"| `{method}` | {against} | {c['n']} | {100 * c['mean_gain']:+.2f} | [{100 * c['ci_low']:+.2f}, "
            f"{100 * c['ci_high']:+.2f}] | {c['wins']}/{c['ties']}/{c['losses']} | {c['p']:.3g} |")


def _gains(cells, targets, method, other_cells, other):
    return [a - b for t in targets if (a := _accuracy(cells, t, method)) is not None
            and (b := _accuracy(other_cells, t, other)) is not None]


def _relative_gains(ours, whole, targets, method, baseline):
    """Per target: (method − baseline) over adapters minus (method − baseline) over whole models."""
    gains = []
    for t in targets:
        values = [_accuracy(ours, t, method), _accuracy(ours, t, baseline),
                  _accuracy(whole, t, method), _accuracy(whole, t, baseline)]
        if None not in values:
            gains.append((values[0] - values[1]) - (values[2] - values[3]))
    return gains


def main(adapters: Path, grid: Path, work: Path, output: Path) -> None:
    ours = {record["cell"]: record for record in load_cells(adapters)}
    whole = {record["cell"]: record for record in load_cells(grid)}
    targets = sorted({record["target"] for record in ours.values()})
    header = ("| method | against | targets | mean gain (pts) | 95% interval | wins/ties/losses | Wilcoxon p |\n"
              "|---|---|---|---|---|---|---|")

    print("| method | targets | adapters: mean accuracy | whole models: mean accuracy |")
    print("|---|---|---|---|")
    for method in SHARED + ADAPTER_ONLY:
        mine = [v for t in targets if (v := _accuracy(ours, t, method)) is not None]
        theirs = [v for t in targets if (v := _accuracy(whole, t, method)) is not None]
        print(f"| `{method}` | {len(mine)} | {statistics.fmean(mine):.4f} | "
              f"{statistics.fmean(theirs):.4f} |" if mine and theirs else
              f"| `{method}` | {len(mine)} | {statistics.fmean(mine) if mine else float('nan'):.4f} | - |")

    print("\nAdapters against TIPA's baselines (the English adapter, the closest language's adapter):\n")
    print(header)
    for method in SHARED[:8] + ADAPTER_ONLY:
        for baseline, words in (("baseline-english", "English adapter"), ("baseline-closest", "closest adapter")):
            row = _row(method, words, _gains(ours, targets, method, ours, baseline))
            if row:
                print(row)

    print("\nThe same method over adapters against over whole fine-tuned models (same targets, same sources):\n")
    print(header)
    for method in SHARED:
        row = _row(method, "whole models", _gains(ours, targets, method, whole, method))
        if row:
            print(row)

    print("\nWhat merging adds over each family's own English source (method − English, adapters minus whole"
          " models; the two families were trained with different recipes, so this, not the raw accuracy, is the"
          " like-for-like comparison):\n")
    print(header)
    for method in SHARED[:8]:
        row = _row(method, "whole models' gain over English",
                   _relative_gains(ours, whole, targets, method, "baseline-english"))
        if row:
            print(row)

    print("\nTIES written as a rank-8 adapter (truncated SVD) against TIES written whole:\n")
    print(header)
    row = _row("merge-ties+adapter8@softmax", "`merge-ties@softmax`",
               _gains(ours, targets, "merge-ties+adapter8@softmax", ours, "merge-ties@softmax"))
    if row:
        print(row)

    _costs(work, ours, whole)
    _plot(targets, ours, whole, output / "gains.png")


def _costs(work: Path, ours, whole) -> None:
    details = [json.loads(p.read_text()) for p in sorted((work / "adapters").glob("*/training_details.json"))]
    sizes = [p.stat().st_size for p in sorted((work / "adapters").glob("*/adapter_model.safetensors"))]
    folders = [sum(f.stat().st_size for f in p.parent.iterdir() if f.is_file())
               for p in sorted((work / "adapters").glob("*/adapter_model.safetensors"))]
    base_bytes = sum(p.stat().st_size for p in (work / "e5").glob("*.safetensors"))
    print("\n| cost | LoRA adapter (rank 8) | whole model |")
    print("|---|---|---|")
    if details:
        seconds = [d["seconds"] for d in details]
        print(f"| training, seconds per language (10 epochs; whole: 3) | {statistics.median(seconds):.0f} "
              f"(min {min(seconds):.0f}, max {max(seconds):.0f}); {sum(seconds) / 60:.1f} min for {len(seconds)} | "
              "side by side: benchmarks/adapter_training_cost.py |")
        print(f"| trainable parameters | {details[0]['adapter']['trainable_parameters']:,} | all but the embeddings |")
        print(f"| dev accuracy, median over the {len(details)} languages | "
              f"{statistics.median(d['dev_accuracy'] for d in details):.3f} | - |")
    if sizes:
        print(f"| storage per source (weights) | {statistics.median(sizes) / 1e6:.2f} MB | {base_bytes / 1e6:.0f} MB |")
        print(f"| storage per source (whole folder) | {statistics.median(folders) / 1e6:.2f} MB | - |")
    medians = []
    for cells in (ours, whole):
        merges = [r["timings"]["merge"] for r in cells.values() if r.get("kind") == "merge"
                  and r.get("status") == "done" and r.get("method") == "linear" and r.get("selection") == "softmax"]
        medians.append(f"{statistics.median(merges):.2f}" if merges else "-")
    print(f"| a grid cell's in-memory `linear` merge of 5 sources, median seconds (the two grids ran in different "
          f"sessions) | {medians[0]} | {medians[1]} |")
    _merge_times(work)


def _merge_times(work: Path) -> None:
    """Five adapter sources merged three ways, side by side in one run, three times each."""
    from merginguriel_core.adapters import adapter_line
    from merginguriel_core.merge import SourceModel, run_merge
    from merginguriel_core.plan import plan_merge

    folders = sorted((work / "adapters").glob("e5-small_sib200_lora_*"))[:5]
    if len(folders) < 5:
        return
    sources = [SourceModel(f.name.rsplit("_", 1)[-1], f, 1.0) for f in folders]
    ways = {"whole model (linear)": ("linear", "model", None), "adapter, linear (exact concatenation, rank 40)":
            ("linear", "adapter", None), "adapter, ties (truncated SVD to rank 8)": ("ties", "adapter", 8),
            "whole model (ties)": ("ties", "model", None)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    written: dict[str, int] = {}
    lines: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(3):
            for name, (strategy, form, rank) in ways.items():
                out = Path(scratch) / f"{round_}-{len(times[name])}-{strategy}-{form}"
                plan = plan_merge(out, sources=sources, strategy=strategy, progress=False, output_format=form,
                                  adapter_rank=rank)
                started = time.perf_counter()
                summary = run_merge(plan)
                times[name].append(time.perf_counter() - started)
                if summary.details.get("output"):
                    lines[name] = adapter_line(summary.details["output"])
                written[name] = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    print("\n| merge of 5 adapter sources, written | median seconds (3 runs, interleaved) | written weights |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {written[name] / 1e6:.1f} MB |")
    for name, line in lines.items():
        print(f"\n{name} ({', '.join(s.locale for s in sources)}, equal weights): {line}")


def _plot(targets, ours, whole, path: Path) -> None:
    """Per target: what merging (and voting) adds over the family's own English source."""
    shown = [(ours, "merge-linear@softmax", "linear@softmax − English: adapters"),
             (whole, "merge-linear@softmax", "linear@softmax − English: whole models"),
             (ours, "vote-uriel_logits@softmax", "uriel_logits@softmax − English: adapters")]
    figure = new_figure(max(8.0, 0.18 * len(targets) + 2), 4.5)
    axes = figure.add_subplot(1, 1, 1)
    for offset, (colour, (cells, method, label)) in enumerate(zip(colours(len(shown)), shown)):
        xs, ys = [], []
        for i, target in enumerate(targets):
            a, b = _accuracy(cells, target, method), _accuracy(cells, target, "baseline-english")
            if a is not None and b is not None:
                xs.append(i + (offset - 1) * 0.22)
                ys.append(100 * (a - b))
        axes.scatter(xs, ys, s=14, color=colour, label=label)
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(targets)), targets, rotation=90, fontsize=6)
    axes.set_ylabel("gain over the English source (points)")
    axes.set_title("Merged LoRA adapters per SIB-200 target (multilingual-e5-small)", fontsize=9)
    axes.legend(fontsize=6, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(figure, path)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
