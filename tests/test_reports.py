"""merginguriel_core.reports: the tables, summaries and result files of `mu nxn` and `mu compare-ensembles`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from merginguriel_core.errors import OutputError
from merginguriel_core.evaluation import NxN
from merginguriel_core.reports import (
    NXN_FILES,
    comparison_row,
    nxn_baselines,
    nxn_summary,
    summarise,
    to_markdown,
    write_comparison_report,
    write_nxn_report,
)


def _rows() -> list[dict]:
    def row(target, method, accuracy, source, zero):
        return {"target": target, "voting_method": method, "accuracy": accuracy, "macro_f1": None, "sources": "a b",
                "best_source": "a", "best_source_accuracy": source, "best_zero_shot": None if zero is None else "b",
                "best_zero_shot_accuracy": zero}

    return [row("de-DE", "soft", 0.8, 0.7, 0.75), row("de-DE", "majority", 0.6, 0.7, 0.75),
            row("nl-NL", "soft", 0.5, 0.5, None), row("nl-NL", "majority", 0.5, 0.5, None)]


def test_summarise_ranks_methods_and_counts_strict_wins() -> None:
    summary = summarise(pd.DataFrame(_rows()))
    assert list(summary.index) == ["soft", "majority"]
    assert summary.loc["soft", "mean_rank"] == 1.25 and summary.loc["majority", "mean_rank"] == 1.75  # a tie shares 1.5
    assert summary.loc["soft", "mean_accuracy"] == pytest.approx(0.65)
    assert summary.loc["soft", "wins_vs_best_source"] == 1 and summary.loc["majority", "wins_vs_best_source"] == 0
    assert summary.loc["soft", "wins_vs_best_zero_shot"] == 1  # no zero-shot baseline is never beaten
    assert (summary["targets"] == 2).all()


def test_to_markdown_gives_the_pivot_and_the_summary() -> None:
    table = pd.DataFrame(_rows())
    markdown = to_markdown(table, summarise(table))
    lines = markdown.splitlines()
    assert lines[0] == "| target | majority | soft | best source | best zero-shot |"
    assert lines[2] == "| de-DE | 0.6000 | 0.8000 | 0.7000 | 0.7500 |"
    assert lines[3] == "| nl-NL | 0.5000 | 0.5000 | 0.5000 | — |"
    assert "| soft | 0.6500 | 0.2121 | 1.25 | 1/2 | 1/2 |" in lines
    assert markdown.endswith("|\n")


def test_comparison_row_sets_a_result_beside_its_baselines() -> None:
    class Result:
        target, method = "de-DE", "soft"
        metrics = {"accuracy": 0.8}
        sources = [("af-ZA", 0.6), ("nl-NL", 0.4)]
        best_source = ("af-ZA", 0.7)
        best_zero_shot = None

    row = comparison_row(Result())
    assert row["sources"] == "af-ZA nl-NL" and row["macro_f1"] is None
    assert row["best_source_accuracy"] == 0.7 and row["best_zero_shot"] is None


def _nxn() -> NxN:
    accuracy = pd.DataFrame([[0.9, 0.4], [0.3, 0.8]], index=["de-DE", "nl-NL"], columns=["de-DE", "nl-NL"])
    return NxN(matrices={"accuracy": accuracy, "macro_f1": accuracy / 2},
               seconds={("de-DE", "de-DE"): 0.1, ("de-DE", "nl-NL"): 0.2, ("nl-NL", "de-DE"): 0.3,
                        ("nl-NL", "nl-NL"): 0.4},
               forward_passes=3, cache_hits=1)


def test_nxn_baselines_name_the_own_model_and_the_best_other_source() -> None:
    baselines = nxn_baselines(_nxn().matrices["accuracy"], ["de-DE", "nl-NL", "sw-KE"])
    assert baselines.loc["de-DE", "own_model"] == 0.9 and baselines.loc["de-DE", "best_zero_shot_source"] == "nl-NL"
    assert baselines.loc["nl-NL", "best_zero_shot"] == 0.4
    assert baselines.loc["sw-KE"].isna().all()  # not a column of the matrix: no baselines


def test_write_nxn_report_writes_every_file_and_replaces_only_when_asked(tmp_path) -> None:
    out = tmp_path / "nxn"
    result = _nxn()
    kwargs = dict(dataset="sib200", data="/data", split="test", sources=["de-DE", "nl-NL"],
                  targets=["de-DE", "nl-NL"], wall_seconds=1.234)
    accuracy = write_nxn_report(out, result, **kwargs)
    assert accuracy is result.matrices["accuracy"]
    assert {p.name for p in out.iterdir()} == {*NXN_FILES, "evaluation_matrix_macro_f1.csv"}
    assert pd.read_csv(out / "evaluation_matrix.csv", index_col=0).loc["nl-NL", "de-DE"] == 0.3
    details = json.loads((out / "nxn_details.json").read_text())
    assert details["cells"] == 4 and details["wall_seconds"] == 1.23 and details["seconds_per_cell"]["de-DE->nl-NL"] == 0.2
    assert nxn_summary(result, 1.234, out) == f"4 cells (3 computed, 1 from the cache) in 1.2 s -> {out / NXN_FILES[0]}"
    with pytest.raises(OutputError, match="appeared while this run was writing it"):
        write_nxn_report(out, result, **kwargs)
    write_nxn_report(out, result, **kwargs, replace=True)


def test_write_comparison_report(tmp_path) -> None:
    out = tmp_path / "cmp"
    markdown = write_comparison_report(out, _rows(), extra={"forward_passes": 7})
    assert (out / "comparison.md").read_text() == markdown
    content = json.loads((out / "comparison.json").read_text())
    assert list(content) == ["rows", "summary", "forward_passes"] and content["summary"][0]["voting_method"] == "soft"
    assert len(pd.read_csv(out / "comparison.csv")) == 4
