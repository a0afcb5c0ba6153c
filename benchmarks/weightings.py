"""Which weighting transfers best: merged (linear, TIES) and ensembled (uriel_logits) accuracy
per weighting on real fine-tuned models, with paired significance tests across targets.

For every target that has a model, the other models are the sources (its own is excluded),
each weighting chooses sources and weights exactly as `mu merge` would (--top-k 20,
--num-languages 5, syntax_knn), and:

- the sources are merged with ``linear`` and with ``ties`` (default density 0.2, the base
  encoder as base model) and the merged classifier is evaluated on the target's test split;
- their test logits (cached) are combined with ``uriel_logits`` using the same weights.

Then, per method, each weighting's mean accuracy and mean rank, and paired tests across the
targets against ``average`` and against the seed's ``uriel``: the Wilcoxon signed-rank test
(two-sided, exact for few targets; zero differences split) and the paired t-test.

Writes ``weightings-sib200-e5.{md,csv,png}`` to the output folder. Usage (after
benchmarks/real_run.sh has trained the models and made the N×N matrix):

    python benchmarks/weightings.py --work /tmp/real --base-model /tmp/real/e5 --out docs/results
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from merginguriel_core.ensemble import run_ensemble
from merginguriel_core.evaluation import LogitsCache, Predictor, gold_ids
from merginguriel_core.merge import SourceModel, resolve_device, run_merge
from merginguriel_core.plan import plan_ensemble, plan_merge
from merginguriel_core.models import collect_models
from merginguriel_core.plugins import get_registry
from merginguriel_core.selection import select_sources

LOCALES = ["en-US", "de-DE", "fr-FR", "ru-RU", "hi-IN", "sw-KE", "zh-CN", "ar-SA"]
PATTERN = "e5-small_sib200_{locale}"


def weightings(nxn: Path) -> list[tuple[str, str, dict]]:
    """(label, plugin, params): the seed, plain averaging, and the signal-keeping weightings."""
    return [
        ("uriel (seed)", "uriel", {}),
        ("average (uriel's sources)", "average", {}),
        ("uniform (5 nearest)", "proportional", {"power": 0.0}),
        ("proportional", "proportional", {}),
        ("softmax T=0.05", "softmax", {}),
        ("local_sinkhorn", "local_sinkhorn", {}),
        ("learned", "learned", {"nxn_matrix": str(nxn)}),
    ]


def paired_tests(table: pd.DataFrame, method: str, reference: str) -> pd.DataFrame:
    """Per weighting: mean difference to ``reference``, wins/ties/losses, Wilcoxon and t-test p."""
    pivot = table.pivot(index="target", columns="weighting", values=method)
    rows = []
    for weighting in pivot.columns:
        if weighting == reference:
            continue
        diff = (pivot[weighting] - pivot[reference]).to_numpy()
        nonzero = diff[np.abs(diff) > 1e-12]
        wilcoxon = stats.wilcoxon(diff, zero_method="zsplit").pvalue if nonzero.size else 1.0
        ttest = stats.ttest_rel(pivot[weighting], pivot[reference]).pvalue if nonzero.size > 1 else 1.0
        rows.append({"method": method, "weighting": weighting, "versus": reference,
                     "mean_difference": float(diff.mean()), "wins": int((diff > 1e-12).sum()),
                     "ties": int((np.abs(diff) <= 1e-12).sum()), "losses": int((diff < -1e-12).sum()),
                     "wilcoxon_p": float(wilcoxon), "t_test_p": float(ttest)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/real"), help="benchmarks/real_run.sh's folder")
    parser.add_argument("--base-model", type=Path, help="the encoder the models were fine-tuned from (default WORK/e5)")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/sib200")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--targets", nargs="*", default=LOCALES)
    args = parser.parse_args()
    base = args.base_model or args.work / "e5"
    nxn = args.work / "nxn" / "evaluation_matrix.csv"
    registry = get_registry()
    refs = collect_models(args.work / "models", PATTERN)
    models = {locale: Path(ref.location) for locale, ref in refs.items()}
    dataset = registry.get("dataset", "sib200")
    location = str(args.data_dir)
    label_space = dataset.labels(location)
    device = resolve_device("auto")
    cached = Predictor(LogitsCache(args.work / "cache"), device, 64, 128)
    fresh = Predictor(LogitsCache(None), device, 64, 128)
    voting = registry.get("voting_method", "uriel_logits")
    evaluators = [registry.get("evaluator", "accuracy")]
    started = time.perf_counter()
    merge_seconds = eval_seconds = 0.0
    rows = []
    with tempfile.TemporaryDirectory(prefix="mu-weightings-") as scratch:
        for target in args.targets:
            examples = dataset.load(location, target, "test")
            gold = gold_ids(examples, label_space)
            available = [locale for locale in models if locale != target]
            for label, plugin, params in weightings(nxn):
                selection = select_sources(registry.get("weighting", plugin), target=target, available=available,
                                           top_k=20, num_languages=5, weighting_params=params)
                sources = selection.weights
                row = {"target": target, "weighting": label, "sources": " ".join(f"{l}:{w:.3f}" for l, w in sources),
                       "n_sources": len(sources)}
                ensemble = run_ensemble(plan_ensemble(selection=selection, models=models, method=voting, dataset=dataset,
                                                      data_dir=location, evaluators=evaluators, registry=registry), cached)
                row["ensemble uriel_logits"] = ensemble.metrics["accuracy"]
                for strategy_name in ("linear", "ties"):
                    strategy = registry.get("strategy", strategy_name)
                    output = Path(scratch) / f"{target}-{plugin}-{strategy_name}"
                    t0 = time.perf_counter()
                    run_merge(plan_merge(
                        output, sources=[SourceModel(l, models[l], w) for l, w in sources], strategy=strategy,
                        base_model=base if strategy.needs_base else None, progress=False,
                    ))
                    t1 = time.perf_counter()
                    logits = fresh.logits(output, examples, label_space)
                    eval_seconds += time.perf_counter() - t1
                    merge_seconds += t1 - t0
                    row[f"merge {strategy_name}"] = float(np.mean(logits.argmax(-1) == gold))
                    shutil.rmtree(output)
                rows.append(row)
                print(json.dumps(row), flush=True)
    elapsed = time.perf_counter() - started
    table = pd.DataFrame(rows)
    methods = ["merge linear", "merge ties", "ensemble uriel_logits"]
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "weightings-sib200-e5.csv", index=False, float_format="%.4f")
    tests = pd.concat([paired_tests(table, m, ref) for m in methods
                       for ref in ("average (uriel's sources)", "uriel (seed)")], ignore_index=True)
    tests.to_csv(args.out / "weightings-sib200-e5-tests.csv", index=False, float_format="%.4f")
    write_report(table, tests, methods, args, elapsed, merge_seconds, eval_seconds,
                 cached.forward_passes, cached.cache_hits)
    plot(table, methods, args.out / "weightings-sib200-e5.png")


def write_report(table, tests, methods, args, elapsed, merge_seconds, eval_seconds, passes, hits) -> None:
    order = list(dict.fromkeys(table["weighting"]))
    means = table.groupby("weighting")[methods].mean().reindex(order)
    ranks = pd.concat([table.pivot(index="target", columns="weighting", values=m).rank(axis=1, ascending=False)
                       .mean().rename(m) for m in methods], axis=1).reindex(order)
    lines = [
        "# Which weighting transfers best (SIB-200, multilingual-e5-small, 8 languages)",
        "",
        "Made by `python benchmarks/weightings.py` (see its docstring) on the models of",
        "[nxn-sib200-e5.md](nxn-sib200-e5.md): for each of the 8 targets, the 7 other languages' models are",
        "the candidates; each weighting picks sources and weights as `mu merge --weighting W --top-k 20",
        "--num-languages 5` would; the sources are merged with `linear` and with `ties` (density 0.2, the",
        "e5 encoder as base) and ensembled with `uriel_logits`; accuracy on the target's 204 test sentences.",
        f"Total {elapsed / 60:.1f} min on 2 CPU cores: {merge_seconds / 60:.1f} min merging, "
        f"{eval_seconds / 60:.1f} min evaluating merged models; the ensembles reused cached source logits "
        f"({hits} cache hits, {passes} forward passes).",
        "",
        "## Mean accuracy over the 8 targets (mean rank among the weightings in brackets; 1 = best)",
        "",
        "| weighting | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for weighting in order:
        cells = [f"{means.loc[weighting, m]:.3f} ({ranks.loc[weighting, m]:.2f})" for m in methods]
        lines.append(f"| {weighting} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired tests across the 8 targets", "",
              "Difference in accuracy to the reference (positive: better), wins/ties/losses over targets,",
              "Wilcoxon signed-rank and paired t-test p-values (two-sided).", "",
              "| method | weighting | versus | mean diff | W/T/L | Wilcoxon p | t-test p |", "|---|---|---|---|---|---|---|"]
    for _, r in tests.iterrows():
        lines.append(f"| {r['method']} | {r['weighting']} | {r['versus']} | {r['mean_difference']:+.3f} | "
                     f"{r['wins']}/{r['ties']}/{r['losses']} | {r['wilcoxon_p']:.3f} | {r['t_test_p']:.3f} |")
    lines += ["", "## Per target", "", "| target | weighting | sources (weight) | " + " | ".join(methods) + " |",
              "|---" * (len(methods) + 3) + "|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['target']} | {r['weighting']} | {r['sources']} | "
                     + " | ".join(f"{r[m]:.3f}" for m in methods) + " |")
    lines += ["", "![mean accuracy per weighting](weightings-sib200-e5.png)", ""]
    (args.out / "weightings-sib200-e5.md").write_text("\n".join(lines))


def plot(table: pd.DataFrame, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = list(dict.fromkeys(table["weighting"]))
    figure, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4.5), dpi=110, sharey=True)
    for axis, method in zip(axes, methods):
        pivot = table.pivot(index="target", columns="weighting", values=method)[order]
        positions = np.arange(len(order))
        axis.bar(positions, pivot.mean(), color="#9ecae1", label="mean over targets")
        for target, values in pivot.iterrows():
            axis.plot(positions, values.to_numpy(), marker="o", linewidth=0.6, markersize=3, alpha=0.6, label=target)
        axis.set_xticks(positions, order, rotation=45, ha="right", fontsize=8)
        axis.set_title(method)
        axis.set_ylim(max(0.0, float(pivot.min().min()) - 0.1), min(1.0, float(pivot.max().max()) + 0.05))
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)


if __name__ == "__main__":
    main()
