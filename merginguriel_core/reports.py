"""Result tables and their reports: what ``mu nxn`` and ``mu compare-ensembles`` write.

The commands parse their options, run the evaluations and print; the tables, the summaries,
the Markdown and the result files they write are built here, so a Python caller gets the
same files as the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from merginguriel_core.errors import ConfigError
from merginguriel_core.outputs import write_json_atomically, write_text_atomically

if TYPE_CHECKING:  # pandas is imported where it is used: it costs every `mu` call ~0.5 s
    import pandas as pd

    from merginguriel_core.evaluation import NxN

#: The accuracy matrix of ``mu nxn``; each further metric gets ``evaluation_matrix_METRIC.csv``.
NXN_MATRIX = "evaluation_matrix.csv"
#: The files every ``mu nxn`` run writes (plus one matrix per further metric).
NXN_FILES = (NXN_MATRIX, "baselines.csv", "nxn_details.json", "evaluation_matrix.png")
#: The files ``mu compare-ensembles`` writes.
COMPARISON_FILES = ("comparison.csv", "comparison.json", "comparison.md")


def _write_csv(frame: pd.DataFrame, path: Path, *, replace: bool = True, index: bool = True) -> None:
    """A table as CSV (4 decimals) through :func:`merginguriel_core.outputs.write_text_atomically`."""
    write_text_atomically(path, frame.to_csv(index=index, float_format="%.4f"), replace=replace)


# ------------------------------------------------------------------------ mu nxn
def matrix_file(metric: str) -> str:
    """The file name of ``metric``'s N×N matrix."""
    return NXN_MATRIX if metric == "accuracy" else f"evaluation_matrix_{metric}.csv"


def main_matrix(result: NxN) -> pd.DataFrame:
    """The accuracy matrix of ``result`` (its first metric's when it has no accuracy)."""
    return result.matrices.get("accuracy", next(iter(result.matrices.values())))


def nxn_baselines(matrix: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Per target: its own model's score and the best zero-shot source (another language's
    model) with its score; ``None`` where the matrix lacks them. Indexed by target."""
    import pandas as pd

    from merginguriel_core.evaluation import best_overall_zero_shot

    rows = []
    for target in targets:
        own = matrix.at[target, target] if target in matrix.index else None
        try:
            best, value = best_overall_zero_shot(matrix, target)
        except ConfigError:
            best, value = None, None
        rows.append({"target": target, "own_model": own, "best_zero_shot_source": best, "best_zero_shot": value})
    return pd.DataFrame(rows).set_index("target")


def nxn_details(result: NxN, *, dataset: str, data: str | None, split: str, sources: Sequence[str],
                targets: Sequence[str], wall_seconds: float) -> dict[str, Any]:
    """The content of ``nxn_details.json``: what was evaluated, and what it cost."""
    return {
        "dataset": dataset, "data": data, "split": split, "sources": list(sources),
        "targets": list(targets), "cells": len(result.seconds), "forward_passes": result.forward_passes,
        "cache_hits": result.cache_hits, "wall_seconds": round(wall_seconds, 2),
        "seconds_per_cell": {f"{s}->{t}": round(v, 3) for (s, t), v in result.seconds.items()},
    }


def write_nxn_report(output: Path, result: NxN, *, dataset: str, data: str | None, split: str,
                     sources: Sequence[str], targets: Sequence[str], wall_seconds: float,
                     replace: bool = False) -> pd.DataFrame:
    """Write one matrix per metric, ``baselines.csv``, ``nxn_details.json`` and the accuracy
    heatmap ``evaluation_matrix.png`` into ``output``
    (made if missing; each file atomically, replacing one only with ``replace``). Returns the
    accuracy matrix (:func:`main_matrix`)."""
    output.mkdir(exist_ok=True)
    for metric, frame in result.matrices.items():
        _write_csv(frame, output / matrix_file(metric), replace=replace)
    matrix = main_matrix(result)
    _write_csv(nxn_baselines(matrix, targets), output / "baselines.csv", replace=replace)
    write_json_atomically(output / "nxn_details.json", nxn_details(
        result, dataset=dataset, data=data, split=split, sources=sources, targets=targets, wall_seconds=wall_seconds,
    ), replace=replace)
    from merginguriel_core.plots import heatmap

    shown = matrix.copy()
    shown.columns.name = "target"
    heatmap(shown, output / "evaluation_matrix.png", f"Zero-shot accuracy on {dataset} {split} (rows: source model)",
            value_format=".2f", label="accuracy", replace=replace)
    return matrix


def nxn_summary(result: NxN, wall_seconds: float, output: Path) -> str:
    """The line ``mu nxn`` ends with: cells, how many were computed or cached, time, file."""
    return (f"{len(result.seconds)} cells ({result.forward_passes} computed, {result.cache_hits} from the cache) "
            f"in {wall_seconds:.1f} s -> {output / NXN_MATRIX}")


# ------------------------------------------------------------ mu compare-ensembles
def comparison_row(result: Any) -> dict[str, Any]:
    """One row of comparison.csv: a (target, voting method) ensemble result next to its baselines
    (``best_zero_shot_from``: where the best-overall one comes from, or that it was not computed)."""
    from merginguriel_core.ensemble import FROM_LOGITS

    return {
        "target": result.target, "voting_method": result.method, "accuracy": result.metrics["accuracy"],
        "macro_f1": result.metrics.get("macro_f1"), "sources": " ".join(l for l, _ in result.sources),
        "best_source": result.best_source[0], "best_source_accuracy": result.best_source[1],
        "best_zero_shot": result.best_zero_shot[0] if result.best_zero_shot else None,
        "best_zero_shot_accuracy": result.best_zero_shot[1] if result.best_zero_shot else None,
        "best_zero_shot_from": getattr(result, "best_zero_shot_from", FROM_LOGITS),
    }


def _zero_shot_skipped(table: pd.DataFrame) -> pd.Series:
    """Per row: whether its best-overall zero-shot baseline was not computed (``--no-baselines``)."""
    import pandas as pd

    from merginguriel_core.ensemble import NOT_COMPUTED

    if "best_zero_shot_from" not in table:
        return pd.Series(False, index=table.index)
    return table["best_zero_shot_from"].eq(NOT_COMPUTED)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean and std of accuracy, average rank across targets (1 = best; ties share
    the mean rank) and wins (strictly better) against each baseline; no wins against the
    best-overall zero-shot baseline (NaN) for a method whose baseline was never computed."""
    ranks = table.groupby("target")["accuracy"].rank(ascending=False, method="average")
    skipped = _zero_shot_skipped(table)
    table = table.assign(rank=ranks,
                         beats_best_source=table["accuracy"] > table["best_source_accuracy"],
                         beats_best_zero_shot=table["accuracy"] > table["best_zero_shot_accuracy"].fillna(float("inf")))
    summary = table.groupby("voting_method").agg(
        mean_accuracy=("accuracy", "mean"), std_accuracy=("accuracy", "std"), mean_rank=("rank", "mean"),
        wins_vs_best_source=("beats_best_source", "sum"), wins_vs_best_zero_shot=("beats_best_zero_shot", "sum"),
        targets=("target", "count"),
    ).sort_values("mean_rank")
    if skipped.any():
        computed = (~skipped).groupby(table["voting_method"]).any().reindex(summary.index)
        summary["wins_vs_best_zero_shot"] = summary["wins_vs_best_zero_shot"].where(computed)
    return summary


def to_markdown(table: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Two Markdown tables: accuracy per target and method next to the baselines, then
    :func:`summarise`'s summary per method."""
    import pandas as pd

    pivot = table.pivot(index="target", columns="voting_method", values="accuracy")
    table = table.assign(zero_shot_skipped=_zero_shot_skipped(table))
    baselines = table.drop_duplicates("target").set_index("target")[
        ["best_source_accuracy", "best_zero_shot_accuracy", "zero_shot_skipped"]]
    lines = ["| target | " + " | ".join(pivot.columns) + " | best source | best zero-shot |",
             "|---" * (len(pivot.columns) + 3) + "|"]
    for target, row in pivot.iterrows():
        base = baselines.loc[target]
        cells = [f"{row[c]:.4f}" for c in pivot.columns]
        zero = ("not computed" if base["zero_shot_skipped"] else "—" if pd.isna(base["best_zero_shot_accuracy"])
                else f"{base['best_zero_shot_accuracy']:.4f}")
        lines.append(f"| {target} | " + " | ".join(cells) + f" | {base['best_source_accuracy']:.4f} | {zero} |")
    lines += ["", "| method | mean | std | mean rank | wins vs best source | wins vs best zero-shot |", "|---|---|---|---|---|---|"]
    for method, row in summary.iterrows():
        std = "—" if pd.isna(row["std_accuracy"]) else f"{row['std_accuracy']:.4f}"
        zero_wins = ("not computed" if pd.isna(row["wins_vs_best_zero_shot"])
                     else f"{int(row['wins_vs_best_zero_shot'])}/{int(row['targets'])}")
        lines.append(f"| {method} | {row['mean_accuracy']:.4f} | {std} | {row['mean_rank']:.2f} | "
                     f"{int(row['wins_vs_best_source'])}/{int(row['targets'])} | {zero_wins} |")
    return "\n".join(lines) + "\n"


def write_comparison_report(output: Path, rows: list[Mapping[str, Any]], *, extra: Mapping[str, Any] | None = None,
                            replace: bool = False) -> str:
    """Write ``comparison.csv``, ``comparison.json`` (the rows, :func:`summarise`'s summary and
    ``extra``, e.g. forward passes and wall time) and ``comparison.md`` into ``output`` (made
    if missing; each file atomically, replacing one only with ``replace``). Returns the Markdown."""
    import pandas as pd

    table = pd.DataFrame(list(rows))
    summary = summarise(table)
    output.mkdir(exist_ok=True)
    _write_csv(table, output / "comparison.csv", replace=replace, index=False)
    records = [{key: None if pd.isna(value) else value for key, value in record.items()}  # NaN is not JSON
               for record in summary.reset_index().to_dict(orient="records")]
    write_json_atomically(output / "comparison.json", {"rows": list(rows), "summary": records, **(extra or {})},
                          replace=replace)
    markdown = to_markdown(table, summary)
    write_text_atomically(output / "comparison.md", markdown, replace=replace)
    return markdown
