"""The best-overall zero-shot baseline of `mu ensemble` and `mu compare-ensembles`: what it costs
is said, `--nxn DIR` takes it from `mu nxn`'s matrix, `--no-baselines` skips it."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import run_cli
from merginguriel_core.ensemble import FROM_LOGITS, NOT_COMPUTED, baseline_cost, run_ensemble
from merginguriel_core.plan import plan_ensemble
from merginguriel_core.reports import summarise, to_markdown

COST = ("Note: computing the best-overall zero-shot baseline: a forward pass of 1 model on nl-NL "
        "(skip with --no-baselines, or reuse an N×N matrix with --nxn DIR)")


def _ensemble(runner, trained, sib_dir, cache, *extra):
    return run_cli(runner, "ensemble", "--target-lang", "nl-NL", "--models", trained, "--data-dir", sib_dir,
                   "--cache-dir", cache, "--no-progress", *extra)


def _report(result) -> dict:
    return json.loads(result.stdout[result.stdout.index("{"):])


@pytest.fixture(scope="module")
def nxn_dir(tmp_path_factory, trained, sib_dir):
    """`mu nxn` over the four trained models, with sw-KE's accuracy on nl-NL and de-DE raised
    to 0.99 (so a baseline taken from the matrix is told apart from one computed)."""
    root = tmp_path_factory.mktemp("nxn")
    out = root / "nxn"
    result = run_cli(CliRunner(), "nxn", "--models", trained, "--data-dir", sib_dir, "--output", out,
                     "--cache-dir", root / "cache", "--no-progress")
    assert result.exit_code == 0, result.output
    matrix = pd.read_csv(out / "evaluation_matrix.csv", index_col=0)
    matrix.loc["sw-KE", ["nl-NL", "de-DE"]] = 0.99
    matrix.to_csv(out / "evaluation_matrix.csv")
    return out


def test_the_cost_of_the_baseline_is_said_before_it_runs(runner, trained, sib_dir, tmp_path):
    cold = _ensemble(runner, trained, sib_dir, tmp_path / "c")
    assert cold.exit_code == 0, cold.output
    report = _report(cold)
    sources = [s["locale"] for s in report["sources"]]
    assert sorted(sources) == ["af-ZA", "de-DE"]  # the pool beyond them: sw-KE, one model
    assert COST in cold.stderr.splitlines()
    assert report["forward_passes"] == 3 and report["best_zero_shot_from"] == FROM_LOGITS
    warm = _ensemble(runner, trained, sib_dir, tmp_path / "c")
    assert "best-overall" not in warm.stderr  # every logit cached: nothing to say
    assert _report(warm)["forward_passes"] == 0 and _report(warm)["best_zero_shot"] == report["best_zero_shot"]


def test_the_cost_line_counts_the_models_that_run():
    assert baseline_cost(51, 0, "sq-AL") == (
        "computing the best-overall zero-shot baseline: a forward pass of each of the 51 models on sq-AL "
        "(skip with --no-baselines, or reuse an N×N matrix with --nxn DIR)")
    assert "a forward pass of each of the 12 models (39 more cached) on sq-AL (" in baseline_cost(12, 39, "sq-AL")


def test_no_baselines_runs_only_the_members_and_says_it(runner, trained, sib_dir, tmp_path):
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--no-baselines")
    assert result.exit_code == 0, result.output
    report = _report(result)
    assert report["forward_passes"] == len(report["sources"]) == 2  # sw-KE never ran
    assert report["best_zero_shot"] is None and report["best_zero_shot_from"] == "not computed (--no-baselines)"
    assert report["best_source"]["locale"] in {"af-ZA", "de-DE"}  # free: the members' own logits
    assert "best-overall" not in result.stderr


def test_nxn_gives_the_baseline_without_running_the_pool(runner, trained, sib_dir, tmp_path, nxn_dir):
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--nxn", nxn_dir)
    assert result.exit_code == 0, result.output
    report = _report(result)
    assert report["forward_passes"] == 2  # the members only
    assert report["best_zero_shot"] == {"locale": "sw-KE", "accuracy": 0.99}  # the matrix's value, not a computed one
    assert report["best_zero_shot_from"] == f"mu nxn matrix {nxn_dir / 'evaluation_matrix.csv'}"
    assert "best-overall" not in result.stderr


def test_nxn_is_in_the_python_api(trained, sib_dir, nxn_dir, registry):
    common = dict(target="nl-NL", sources=[("af-ZA", 0.5), ("de-DE", 0.5)], models=trained, data_dir=sib_dir,
                  no_cache=True, device="cpu", registry=registry)
    plan = plan_ensemble(**common, nxn=nxn_dir)
    matrix = pd.read_csv(nxn_dir / "evaluation_matrix.csv", index_col=0)
    assert plan.zero_shot == {loc: pytest.approx(matrix.at[loc, "nl-NL"]) for loc in ("af-ZA", "de-DE", "sw-KE")}
    assert run_ensemble(plan).best_zero_shot == ("sw-KE", 0.99)
    skipped = run_ensemble(plan_ensemble(**common, baselines=False))
    assert skipped.best_zero_shot is None and skipped.best_zero_shot_from == NOT_COMPUTED


def test_nxn_that_lacks_the_target_or_a_model_is_refused(runner, trained, sib_dir, tmp_path, nxn_dir):
    folder = tmp_path / "nxn"
    shutil.copytree(nxn_dir, folder)
    matrix = pd.read_csv(folder / "evaluation_matrix.csv", index_col=0)
    matrix.drop(columns=["nl-NL"]).to_csv(folder / "evaluation_matrix.csv")
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--nxn", folder)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (f"Error: --nxn {folder / 'evaluation_matrix.csv'} has no column for the "
                                              f"target nl-NL; its targets are af-ZA, de-DE, sw-KE")

    matrix.drop(index=["sw-KE"]).to_csv(folder / "evaluation_matrix.csv")
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--nxn", folder)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (f"Error: --nxn {folder / 'evaluation_matrix.csv'} has no accuracy of "
                                              f"model sw-KE on nl-NL; rerun `mu nxn` with every model, or use "
                                              f"--no-baselines")
    assert not (tmp_path / "c").exists()  # refused before any model ran


def test_nxn_of_another_split_or_no_matrix_is_refused(runner, trained, sib_dir, tmp_path, nxn_dir):
    folder = tmp_path / "nxn"
    shutil.copytree(nxn_dir, folder)
    details = json.loads((folder / "nxn_details.json").read_text())
    (folder / "nxn_details.json").write_text(json.dumps(details | {"split": "dev"}))
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--nxn", folder)
    assert result.exit_code == 1 and result.stderr.splitlines()[-1] == (
        f"Error: --nxn {folder} was evaluated on split 'dev', this ensemble on 'test'; give an N×N matrix of the "
        f"same split")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--nxn", empty)
    assert result.exit_code == 1 and result.stderr.splitlines()[-1] == (
        f"Error: --nxn {empty} has no evaluation_matrix.csv; give the --output folder of a `mu nxn` run")
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--nxn", folder, "--no-baselines")
    assert result.exit_code == 1 and "give --nxn DIR or --no-baselines, not both" in result.stderr


def test_compare_ensembles_takes_nxn_and_no_baselines(runner, trained, sib_dir, tmp_path, nxn_dir):
    args = ["compare-ensembles", "--target-langs", "nl-NL", "de-DE", "--voting-methods", "soft", "uriel_logits",
            "--models", trained, "--data-dir", sib_dir, "--cache-dir", tmp_path / "cache", "--no-progress"]
    skipped = run_cli(runner, *args, "--no-baselines", "--output", tmp_path / "skipped")
    assert skipped.exit_code == 0, skipped.output
    details = json.loads((tmp_path / "skipped" / "comparison.json").read_text())
    members = {(row["target"], source) for row in details["rows"] for source in row["sources"].split()}
    assert "sw-KE" not in {source for _, source in members}  # the pool's model beyond the members
    assert details["forward_passes"] == len(members) == 4  # each member once on its target: sw-KE never ran
    assert {row["best_zero_shot_from"] for row in details["rows"]} == {NOT_COMPUTED}
    assert [row["wins_vs_best_zero_shot"] for row in details["summary"]] == [None, None]
    markdown = (tmp_path / "skipped" / "comparison.md").read_text()
    assert "| nl-NL | " in markdown and markdown.count("not computed") == 4  # 2 targets, 2 methods
    assert pd.read_csv(tmp_path / "skipped" / "comparison.csv")["best_zero_shot_accuracy"].isna().all()

    reused = run_cli(runner, *args, "--nxn", nxn_dir, "--output", tmp_path / "reused")
    assert reused.exit_code == 0, reused.output
    table = pd.read_csv(tmp_path / "reused" / "comparison.csv")
    assert set(table["best_zero_shot"]) == {"sw-KE"} and set(table["best_zero_shot_accuracy"]) == {0.99}
    assert json.loads((tmp_path / "reused" / "comparison.json").read_text())["forward_passes"] == 0  # all cached


def test_summary_of_a_baseline_not_computed_is_no_count():
    rows = [{"target": t, "voting_method": m, "accuracy": a, "macro_f1": None, "sources": "a", "best_source": "a",
             "best_source_accuracy": 0.5, "best_zero_shot": None, "best_zero_shot_accuracy": None,
             "best_zero_shot_from": NOT_COMPUTED} for t, m, a in (("de-DE", "soft", 0.8), ("de-DE", "majority", 0.6))]
    table = pd.DataFrame(rows)
    summary = summarise(table)
    assert summary["wins_vs_best_zero_shot"].isna().all() and list(summary["wins_vs_best_source"]) == [1, 1]
    lines = to_markdown(table, summary).splitlines()
    assert lines[2] == "| de-DE | 0.6000 | 0.8000 | 0.5000 | not computed |"
    assert "| soft | 0.8000 | — | 1.00 | 1/1 | not computed |" in lines
