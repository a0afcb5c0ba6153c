"""``mu report``: a synthetic results folder with known numbers, its tables, statistics, plots and refusals.

Every result is a multiple of 1/64, so differences are exact in binary floating point and
the expected gains, wins, ties and losses below are exact.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import typer
from scipy.stats import wilcoxon
from typer.testing import CliRunner

from merginguriel_core.errors import ConfigError
from merginguriel_core.experiments.report import (
    REPORT_FILES, paired_comparison, parse_cell_key, reference_selections, weighted_similarity, write_report,
)
from merginguriel_core.experiments.results import cell_file, write_cell
from merginguriel_core.similarity import uriel_similarity_matrix

PNG = b"\x89PNG\r\n\x1a\n"
TARGETS = ["af-ZA", "da-DK", "ja-JP", "sv-SE", "sw-KE", "tr-TR"]  # sorted, as experiment.json lists them
MODELS = ["de-DE", "en-US", "fr-FR", "nl-NL"]
#: N×N accuracy × 64: target -> model -> value.
NXN = {
    "sw-KE": {"en-US": 32, "de-DE": 30, "nl-NL": 28, "fr-FR": 26},
    "af-ZA": {"en-US": 40, "de-DE": 44, "nl-NL": 46, "fr-FR": 36},
    "da-DK": {"en-US": 42, "de-DE": 46, "nl-NL": 44, "fr-FR": 38},
    "sv-SE": {"en-US": 44, "de-DE": 48, "nl-NL": 47, "fr-FR": 40},
    "tr-TR": {"en-US": 30, "de-DE": 28, "nl-NL": 27, "fr-FR": 29},
    "ja-JP": {"en-US": 34, "de-DE": 30, "nl-NL": 31, "fr-FR": 33},
}
CLOSEST = {"sw-KE": "de-DE", "af-ZA": "nl-NL", "da-DK": "de-DE", "sv-SE": "de-DE", "tr-TR": "de-DE", "ja-JP": "fr-FR"}
OWN = {"sw-KE": 56, "af-ZA": 58, "da-DK": 60, "sv-SE": 60, "tr-TR": 54}  # ja-JP: skipped (no model of its own)
URIEL = {"sw-KE": 34, "af-ZA": 48, "da-DK": 46, "sv-SE": 47, "ja-JP": 33}  # tr-TR: failed
AVERAGE = {"sw-KE": 33, "af-ZA": 46, "da-DK": 45, "sv-SE": 46, "tr-TR": 31, "ja-JP": 34}
RANDOM = {"sw-KE": (30, 28), "af-ZA": (40, 42), "da-DK": (40, 40), "sv-SE": (42, 44), "tr-TR": (29, 31),
          "ja-JP": (34, 32)}
VOTE = {"sw-KE": 31, "af-ZA": 47, "da-DK": 47, "sv-SE": 49, "tr-TR": 28}  # ja-JP: missing (not computed yet)
URIEL_SOURCES = [["de-DE", 0.75], ["nl-NL", 0.25]]
EQUAL_SOURCES = [["de-DE", 0.5], ["nl-NL", 0.5]]
RANDOM_SOURCES = ([["fr-FR", 0.5], ["en-US", 0.5]], [["fr-FR", 0.5], ["de-DE", 0.5]])
VOTE_SOURCES = [["de-DE", 0.6], ["nl-NL", 0.4]]
SPEC = {"name": "synthetic", "selection": {"features": "syntax_knn"}, "baselines": ["own", "english", "closest", "oracle"],
        "selections": [{"name": "uriel", "weighting": "uriel", "sources": None, "draws": 1},
                       {"name": "average", "weighting": "average", "sources": None, "draws": 1},
                       {"name": "random", "weighting": "random", "sources": None, "draws": 2},
                       {"name": "softmax", "weighting": "softmax", "sources": None, "draws": 1}]}


def _keys(target: str) -> list[str]:
    return ([f"{target}/nxn-{m}" for m in MODELS] + [f"{target}/baseline-{b}" for b in SPEC["baselines"]]
            + [f"{target}/merge-linear@uriel", f"{target}/merge-linear@average", f"{target}/merge-linear@random#0",
               f"{target}/merge-linear@random#1", f"{target}/vote-majority@softmax"])


def _write(results, key: str, status: str = "done", value: int | None = None, **extra) -> None:
    cell = parse_cell_key(key)
    record = {"spec": "0123456789abcdef", "cell": key, "target": cell.target, "kind": cell.kind, "method": cell.method,
              "selection": cell.selection, "draw": cell.draw, "status": status, "definition": {},
              "definition_hash": "0", "timings": {"total": 0.5}, **extra}
    if value is not None:
        record |= {"metrics": {"accuracy": value / 64, "macro_f1": (value - 2) / 64}, "examples": 64}
    write_cell(cell_file(results, cell.target, cell.id), record)


def build_results(root):
    """The synthetic grid: 6 targets, 4 models, 4 baselines, linear under uriel, average and
    random (2 draws), majority voting under softmax; one failed, one skipped, one missing cell."""
    results = root / "results"
    for target in TARGETS:
        for model in MODELS:
            _write(results, f"{target}/nxn-{model}", value=NXN[target][model], model=model)
        if target in OWN:
            _write(results, f"{target}/baseline-own", value=OWN[target], model=target)
        else:
            _write(results, f"{target}/baseline-own", "skipped", reason=f"{target} has no model of its own")
        _write(results, f"{target}/baseline-english", value=NXN[target]["en-US"], model="en-US")
        _write(results, f"{target}/baseline-closest", value=NXN[target][CLOSEST[target]], model=CLOSEST[target])
        oracle = max(MODELS, key=lambda m: NXN[target][m])
        _write(results, f"{target}/baseline-oracle", value=NXN[target][oracle], model=oracle)
        if target in URIEL:
            _write(results, f"{target}/merge-linear@uriel", value=URIEL[target], sources=URIEL_SOURCES)
        else:
            _write(results, f"{target}/merge-linear@uriel", "failed", error="ModelError: de-DE: shard 2 is truncated")
        _write(results, f"{target}/merge-linear@average", value=AVERAGE[target], sources=EQUAL_SOURCES)
        for draw in (0, 1):
            _write(results, f"{target}/merge-linear@random#{draw}", value=RANDOM[target][draw],
                   sources=RANDOM_SOURCES[draw])
        if target in VOTE:
            _write(results, f"{target}/vote-majority@softmax", value=VOTE[target], sources=VOTE_SOURCES)
    experiment = {"format": 1, "name": "synthetic", "digest": "0123456789abcdef", "spec_file": "spec.yaml",
                  "spec": SPEC, "keep_models": False, "runs": [], "targets": TARGETS,
                  "models": {m: f"/models/{m}" for m in MODELS}, "cells": [k for t in TARGETS for k in _keys(t)]}
    (results / "experiment.json").write_text(json.dumps(experiment), encoding="utf-8")
    return results


@pytest.fixture
def results(tmp_path):
    return build_results(tmp_path)


@pytest.fixture
def report(results):
    return write_report(results, bootstrap=2000, seed=7)


def _gains(method: dict[str, int], other: dict[str, float]) -> list[float]:
    """method − other over the sorted targets that have both, as fractions of 64."""
    return [(method[t] - other[t]) / 64 for t in TARGETS if t in method and t in other]


RANDOM_MEAN = {t: sum(v) / 2 for t, v in RANDOM.items()}
ENGLISH = {t: NXN[t]["en-US"] for t in TARGETS}


# ---------------------------------------------------------------------------- the table
def test_rows_hold_each_cell_beside_its_baselines(report):
    rows = {(row["target"], row["method"]): row for row in report.rows}
    assert len(rows) == 4 * 6
    row = rows[("sw-KE", "merge-linear@uriel")]
    assert row["accuracy"] == 34 / 64 and row["status"] == "done"
    assert (row["own"], row["english"], row["closest"], row["oracle"]) == (56 / 64, 32 / 64, 30 / 64, 32 / 64)
    assert (row["closest_model"], row["oracle_model"]) == ("de-DE", "en-US")
    assert row["best_source"] == 30 / 64 and row["best_source_model"] == "de-DE"  # best of de-DE, nl-NL on sw-KE
    assert row["average"] == 33 / 64 and row["random"] == 29 / 64
    assert row["gain_vs_english"] == 2 / 64 and row["gain_vs_own"] == -22 / 64 and row["gain_vs_random"] == 5 / 64
    assert row["sources"] == "de-DE:0.750 nl-NL:0.250"


def test_random_draws_become_one_row_with_their_mean_spread_and_count(report):
    rows = {(row["target"], row["method"]): row for row in report.rows}
    row = rows[("sw-KE", "merge-linear@random")]
    assert row["accuracy"] == 29 / 64 and row["draws"] == 2
    assert row["std"] == pytest.approx(np.std([30 / 64, 28 / 64], ddof=1))
    assert row["random"] is None  # not compared with itself
    assert row["average"] == 33 / 64
    # best source per draw (fr-FR|en-US: en-US 32; fr-FR|de-DE: de-DE 30), then the mean
    assert row["best_source"] == 31 / 64 and row["best_source_model"] == "en-US | de-DE"
    assert rows[("da-DK", "merge-linear@random")]["std"] == 0.0
    assert rows[("sw-KE", "merge-linear@average")]["average"] is None


def test_failed_and_missing_cells_have_rows_without_values(report):
    rows = {(row["target"], row["method"]): row for row in report.rows}
    failed = rows[("tr-TR", "merge-linear@uriel")]
    assert failed["status"] == "failed" and failed["accuracy"] is None and failed["gain_vs_english"] is None
    assert rows[("ja-JP", "vote-majority@softmax")]["status"] == "missing"
    assert rows[("ja-JP", "merge-linear@uriel")]["own"] is None  # the own baseline was skipped there


def test_source_similarity_is_the_weighted_uriel_similarity(report):
    matrix = uriel_similarity_matrix(["sw-KE", "de-DE", "nl-NL", "fr-FR", "en-US"])
    sim = lambda a, b: matrix.values[matrix.locales.index(a), matrix.locales.index(b)]
    rows = {(row["target"], row["method"]): row for row in report.rows}
    assert rows[("sw-KE", "merge-linear@uriel")]["source_similarity"] == pytest.approx(
        0.75 * sim("sw-KE", "de-DE") + 0.25 * sim("sw-KE", "nl-NL"))
    draws = [0.5 * sim("sw-KE", "fr-FR") + 0.5 * sim("sw-KE", "en-US"),
             0.5 * sim("sw-KE", "fr-FR") + 0.5 * sim("sw-KE", "de-DE")]
    assert rows[("sw-KE", "merge-linear@random")]["source_similarity"] == pytest.approx(sum(draws) / 2)
    assert weighted_similarity(matrix, "sw-KE", [["xx-XX", 1.0]]) is None


# ------------------------------------------------------------------------- statistics
def test_method_statistics(report):
    summary = {entry["method"]: entry for entry in report.summary}
    uriel = summary["merge-linear@uriel"]
    assert (uriel["targets"], uriel["planned"]) == (5, 6)
    assert uriel["mean"] == pytest.approx(np.mean([v / 64 for v in URIEL.values()]))
    assert uriel["median"] == 46 / 64
    assert set(uriel["comparisons"]) == {"own", "english", "closest", "oracle", "best_source", "average", "random"}
    assert set(summary["vote-majority@softmax"]["comparisons"]) == {"own", "english", "closest", "oracle", "best_source"}
    assert "random" not in summary["merge-linear@random"]["comparisons"]


def test_comparison_with_english_gains_wins_interval_and_wilcoxon(report):
    gains = _gains(URIEL, ENGLISH)
    assert gains == [8 / 64, 4 / 64, -1 / 64, 3 / 64, 2 / 64]  # af, da, ja, sv, sw (tr-TR failed)
    c = report.comparison("merge-linear@uriel", "english")
    assert (c["n"], c["left_out"], c["wins"], c["ties"], c["losses"]) == (5, 1, 4, 0, 1)
    assert c["mean_gain"] == pytest.approx(0.05)  # 16 / 5 / 64
    assert c["ci_low"] <= c["mean_gain"] <= c["ci_high"] and c["ci_low"] < c["ci_high"]
    rng = np.random.default_rng(7)
    means = np.asarray(gains)[rng.integers(0, 5, size=(2000, 5))].mean(axis=1)
    assert [c["ci_low"], c["ci_high"]] == pytest.approx(list(np.percentile(means, [2.5, 97.5])))
    expected = wilcoxon(gains)
    assert c["p"] == pytest.approx(expected.pvalue) and c["p"] == pytest.approx(0.125)
    assert c["statistic"] == expected.statistic and c["significant"] is False
    assert c["against"] == "the English model"


def test_comparison_with_ties_and_a_significant_one(report):
    best = report.comparison("merge-linear@uriel", "best_source")
    assert (best["wins"], best["ties"], best["losses"]) == (3, 1, 1)  # +2, 0, +2, -1, +4
    assert best["p"] == pytest.approx(wilcoxon(np.array([2, 0, 2, -1, 4]) / 64).pvalue)
    assert "1 tied targets left out" in best["note"]
    own = report.comparison("merge-linear@uriel", "own")
    assert (own["n"], own["left_out"], own["losses"]) == (4, 2, 4)  # ja-JP: no own baseline; tr-TR: failed
    assert own["mean_gain"] == pytest.approx(-59 / 4 / 64)
    versus_random = report.comparison("merge-linear@average", "random")
    gains = _gains(AVERAGE, RANDOM_MEAN)
    assert gains == [5 / 64, 5 / 64, 1 / 64, 3 / 64, 4 / 64, 1 / 64]
    assert (versus_random["n"], versus_random["wins"]) == (6, 6)
    assert versus_random["p"] == pytest.approx(wilcoxon(gains).pvalue) and versus_random["p"] < 0.05
    assert versus_random["significant"] is True
    assert versus_random["against"] == "merge-linear@random"
    vote = report.comparison("vote-majority@softmax", "english")
    assert (vote["n"], vote["left_out"], vote["wins"], vote["losses"]) == (5, 1, 3, 2)


def test_paired_comparison_is_honest_about_what_it_cannot_test():
    ties = paired_comparison([0.0, 0.0, 1e-12], bootstrap=200)
    assert (ties["ties"], ties["wins"]) == (3, 0) and math.isnan(ties["p"]) and ties["significant"] is None
    assert "all 3 targets tie" in ties["note"]
    one = paired_comparison([0.25], bootstrap=200)
    assert one["mean_gain"] == 0.25 and math.isnan(one["ci_low"]) and math.isnan(one["p"])
    assert "only 1 target" in one["note"]
    none = paired_comparison([], bootstrap=200)
    assert none["n"] == 0 and math.isnan(none["mean_gain"]) and none["note"] == "no target has both results"
    again = paired_comparison([0.1, 0.3, -0.05, 0.2], bootstrap=500, seed=3)
    assert again == paired_comparison([0.1, 0.3, -0.05, 0.2], bootstrap=500, seed=3)
    assert again["ci_low"] != paired_comparison([0.1, 0.3, -0.05, 0.2], bootstrap=500, seed=4)["ci_low"]


def test_headline_questions(report):
    questions = {q["question"]: q for q in report.headlines}
    choice = questions["Does URIEL's choice of sources beat a random choice?"]
    assert [a["method"] for a in choice["answers"]] == ["merge-linear@uriel", "merge-linear@average"]
    assert choice["verdict"].startswith("significantly better in 1 of 2 comparisons")
    weights = questions["Do URIEL's weights beat equal weights on the same sources?"]
    assert [a["method"] for a in weights["answers"]] == ["merge-linear@uriel"]
    english = questions["Does merging beat the English model?"]
    assert [a["method"] for a in english["answers"]] == ["merge-linear@uriel", "merge-linear@average",
                                                        "merge-linear@random"]
    assert [a["method"] for a in questions["Does voting beat the English model?"]["answers"]] == ["vote-majority@softmax"]


# ------------------------------------------------------------------------------ files
def test_files_hold_the_real_values(report, results):
    output = results / "report"
    assert sorted(p.name for p in report.files) == sorted(REPORT_FILES)
    with (output / "report.csv").open(newline="", encoding="utf-8") as handle:
        rows = {(r["target"], r["method"]): r for r in csv.DictReader(handle)}
    row = rows[("af-ZA", "merge-linear@uriel")]
    assert float(row["accuracy"]) == pytest.approx(48 / 64) and float(row["gain_vs_own"]) == pytest.approx(-10 / 64)
    assert row["best_source_model"] == "nl-NL" and rows[("tr-TR", "merge-linear@uriel")]["accuracy"] == ""
    with (output / "summary.csv").open(newline="", encoding="utf-8") as handle:
        summary = {(r["method"], r["comparison"]): r for r in csv.DictReader(handle)}
    assert float(summary[("merge-linear@uriel", "english")]["mean_gain"]) == pytest.approx(0.05)
    assert summary[("merge-linear@uriel", "english")]["wins"] == "4"
    data = json.loads((output / "report.json").read_text(encoding="utf-8"))
    assert data["metric"] == "accuracy" and data["bootstrap"] == 2000 and data["seed"] == 7
    uriel = next(e for e in data["summary"] if e["method"] == "merge-linear@uriel")
    assert uriel["comparisons"]["english"]["p"] == pytest.approx(0.125)
    assert data["cells"] == {"planned": 78, "done": 75, "failed": 1, "skipped": 1, "missing": 1, "damaged": 0}
    for name in ("similarity.png", "nxn.png", "targets.png", "gain_vs_similarity.png"):
        assert (output / name).read_bytes()[:8] == PNG


def test_markdown_states_the_verdicts_and_links_the_plots(report, results):
    text = (results / "report" / "report.md").read_text(encoding="utf-8")
    assert ("merge-linear@uriel beats the English model on 4 of 5 targets (0 ties, 1 loss), mean gain +0.050 "
            f"[{report.comparison('merge-linear@uriel', 'english')['ci_low']:+.3f}, "
            f"{report.comparison('merge-linear@uriel', 'english')['ci_high']:+.3f}], Wilcoxon p = 0.125: not "
            "significant at 0.05; 1 target left out") in text
    significant = text.split("### Significant at 0.05")[1].split("###")[0]
    assert "merge-linear@average beats merge-linear@random on 6 of 6 targets" in significant
    assert "significant at 0.05 (better)" in significant
    assert "### Does URIEL's choice of sources beat a random choice?" in text
    for name in ("similarity.png", "nxn.png", "targets.png", "gain_vs_similarity.png"):
        assert f"]({name})" in text
    assert "| sw-KE | merge-linear@uriel | 0.5312 | 0.8750 (-0.3438) | 0.5000 (+0.0312) |" in text
    assert "| sw-KE | merge-linear@random | 0.4531 ± 0.0221 (2 draws) |" in text


def test_missing_failed_and_skipped_cells_are_listed(report, results):
    assert report.missing == ["ja-JP/vote-majority@softmax"]
    assert report.failed == [{"cell": "tr-TR/merge-linear@uriel", "error": "ModelError: de-DE: shard 2 is truncated"}]
    assert report.skipped == [{"cell": "ja-JP/baseline-own", "reason": "ja-JP has no model of its own"}]
    section = (results / "report" / "report.md").read_text(encoding="utf-8").split("## Missing and failed cells")[1]
    assert "`ja-JP/vote-majority@softmax`" in section
    assert "`tr-TR/merge-linear@uriel`: ModelError: de-DE: shard 2 is truncated" in section
    assert "`ja-JP/baseline-own`: ja-JP has no model of its own" in section
    data = json.loads((results / "report" / "report.json").read_text(encoding="utf-8"))
    assert "ja-JP/vote-majority@softmax" in data["missing"] and data["failed"] == report.failed


def test_an_existing_report_is_refused_without_overwrite_and_left_untouched(report, results):
    output = results / "report"
    before = {name: (output / name).read_bytes() for name in REPORT_FILES}
    with pytest.raises(ConfigError, match=r"report\.csv already exists; pass --overwrite to replace it$"):
        write_report(results, bootstrap=2000)
    assert {name: (output / name).read_bytes() for name in REPORT_FILES} == before
    again = write_report(results, bootstrap=2000, seed=1, overwrite=True)
    assert json.loads((output / "report.json").read_text(encoding="utf-8"))["seed"] == 1
    assert again.comparison("merge-linear@uriel", "english")["mean_gain"] == pytest.approx(0.05)


def test_another_metric_and_the_errors_for_bad_options(results, tmp_path):
    report = write_report(results, tmp_path / "f1", metric="macro_f1", bootstrap=2000)
    rows = {(row["target"], row["method"]): row for row in report.rows}
    assert rows[("sw-KE", "merge-linear@uriel")]["macro_f1"] == 32 / 64
    assert report.comparison("merge-linear@uriel", "english")["mean_gain"] == pytest.approx(0.05)  # both shift by 2/64
    with pytest.raises(ConfigError, match=r"^--metric 'bleu' is not in the results; the cells have: accuracy, macro_f1$"):
        write_report(results, tmp_path / "bleu", metric="bleu")
    with pytest.raises(ConfigError, match=r"^--bootstrap must be a whole number of resamples >= 100, got 10$"):
        write_report(results, tmp_path / "b", bootstrap=10)
    with pytest.raises(ConfigError, match=r"^--seed must be a whole number >= 0, got -1$"):
        write_report(results, tmp_path / "s", seed=-1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no experiment\.json and no cells/: not an experiment's results folder$"):
        write_report(tmp_path / "empty")
    assert not (tmp_path / "bleu").exists() and not (tmp_path / "b").exists()


def test_a_grid_that_has_just_started_lists_every_cell_as_missing(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    keys = [k for t in TARGETS for k in _keys(t)]
    experiment = {"format": 1, "name": "new", "digest": "d", "spec": SPEC, "runs": [], "targets": TARGETS,
                  "models": {}, "cells": keys}
    (results / "experiment.json").write_text(json.dumps(experiment), encoding="utf-8")
    _write(results, "sw-KE/nxn-de-DE", value=30, model="de-DE")
    report = write_report(results, bootstrap=100)
    assert report.missing == [k for k in keys if k != "sw-KE/nxn-de-DE"]
    assert report.cells["done"] == 1 and all(row["status"] == "missing" for row in report.rows)
    assert all(c["n"] == 0 for e in report.summary for c in e["comparisons"].values())
    assert set(report.plots) == {"similarity", "nxn"}
    assert "no merge or vote cell has a result yet: the per-target chart is left out" in report.notes
    text = (results / "report" / "report.md").read_text(encoding="utf-8")
    assert "### Missing (77)" in text and "The grid has no comparison that answers them yet" in text


def test_a_damaged_cell_file_is_listed(results):
    path = cell_file(results, "sw-KE", "merge-linear@average")
    path.write_text(path.read_text(encoding="utf-8").replace('"status": "done"', '"status": "failed"'), encoding="utf-8")
    report = write_report(results, bootstrap=100)
    assert report.damaged == [{"file": str(path), "why": "its checksum does not match its content"}]
    assert "sw-KE/merge-linear@average" in report.missing
    assert report.comparison("merge-linear@average", "random")["left_out"] == 1


def test_without_experiment_json_the_cells_are_still_reported(results):
    (results / "experiment.json").unlink()
    report = write_report(results, bootstrap=100)
    assert report.missing == [] and report.cells["done"] == 75
    assert f"{results} has no experiment.json: the missing cells cannot be listed" in report.notes
    assert report.comparison("merge-linear@uriel", "english")["mean_gain"] == pytest.approx(0.05)


def test_reference_selections_come_from_the_spec():
    assert reference_selections({}) == {"average": "average", "random": "random"}
    spec = {"selections": [{"name": "all", "weighting": "average", "sources": "all"},
                           {"name": "equal", "weighting": "average"}, {"name": "r3", "weighting": "random"}]}
    assert reference_selections(spec) == {"average": "equal", "random": "r3"}


# -------------------------------------------------------------------------------- CLI
def _cli() -> typer.Typer:
    """``mu`` once it has the report command; until then an app of its group with it alone."""
    from typer.main import get_command

    from merginguriel_cli import report as command
    from merginguriel_cli.main import _MuGroup, app

    if "report" in get_command(app).commands:
        return app
    alone = typer.Typer(cls=_MuGroup)
    alone.callback()(lambda: None)
    command.register(alone)
    return alone


def test_cli_writes_the_report_and_exits_1_on_a_refusal(results, tmp_path):
    runner, app = CliRunner(), _cli()
    done = runner.invoke(app, ["report", str(results), "--output", str(tmp_path / "out"), "--bootstrap", "500"])
    assert done.exit_code == 0, done.output
    assert "4 methods on 6 targets; cells: 75 done, 1 failed, 1 skipped, 1 missing" in done.stdout
    assert (tmp_path / "out" / "report.md").is_file()
    again = runner.invoke(app, ["report", str(results), "--output", str(tmp_path / "out")])
    assert again.exit_code == 1
    assert again.stderr == f"Error: {tmp_path / 'out' / 'report.csv'} already exists; pass --overwrite to replace it\n"
    assert runner.invoke(app, ["report", str(results), "-o", str(tmp_path / "out"), "--overwrite",
                               "--seed", "3"]).exit_code == 0
    bad = runner.invoke(app, ["report", str(results), "--metric", "bleu"])
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: --metric 'bleu' is not in the results")
    assert runner.invoke(app, ["report"]).exit_code == 2  # RESULTS is required


def test_a_significant_difference_takes_its_direction_from_the_ranks_not_the_mean():
    from merginguriel_core.experiments.report import paired_comparison, sentence

    # fifteen small losses and one large gain: the mean is positive, the ranks say worse
    few_large = paired_comparison([-0.01 - 0.001 * i for i in range(15)] + [0.6], bootstrap=1000)
    assert few_large["mean_gain"] > 0 and few_large["significant"] and few_large["direction"] == "unclear"
    words = sentence("merge-linear@softmax", {**few_large, "against": "the English model", "left_out": 0})
    assert "significant at 0.05 (direction unclear: the ranks and the mean gain disagree)" in words
    clear = paired_comparison([0.02 + 0.001 * i for i in range(12)], bootstrap=1000)
    assert clear["direction"] == "better" and clear["significant"]
    assert paired_comparison([-0.03 - 0.001 * i for i in range(12)], bootstrap=1000)["direction"] == "worse"


def test_the_python_snippet_of_the_docs_runs(results, monkeypatch):
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "reports.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(results.parent)
    namespace: dict = {}
    exec(compile(blocks[0].replace('"RESULTS"', repr(results.name)), "docs/reports.md", "exec"), namespace)
    found = namespace["report"].comparison("merge-linear@uriel", "english")
    assert found["n"] >= 2 and {"mean_gain", "ci_low", "ci_high", "wins", "p"} <= set(found)
    assert (results / "report" / "report.md").is_file()
