"""Voting methods against hand computations; `mu ensemble` and `mu compare-ensembles`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, installed_registry
from merginguriel_cli.main import join_list_options

# Three models, two examples, three classes.
LOGITS = np.array([
    [[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]],
    [[0.0, 3.0, 1.0], [1.0, 0.0, 0.0]],
    [[0.5, 2.0, 0.0], [2.0, 0.0, 1.0]],
])
WEIGHTS = np.array([0.6, 0.25, 0.15])


def _combine(name):
    return installed_registry().get("voting_method", name).combine(LOGITS, WEIGHTS, {})


def test_majority():
    # argmaxes: example 0 -> 0, 1, 1 ; example 1 -> 2, 0, 0
    np.testing.assert_array_equal(_combine("majority"), [[1, 2, 0], [2, 0, 1]])
    assert _combine("majority").argmax(-1).tolist() == [1, 0]


def test_majority_tie_goes_to_lowest_label():
    logits = np.array([[[0.0, 1.0]], [[1.0, 0.0]]])
    scores = installed_registry().get("voting_method", "majority").combine(logits, np.array([0.5, 0.5]), {})
    assert scores.argmax(-1).tolist() == [0]


def test_weighted_majority():
    np.testing.assert_allclose(_combine("weighted_majority"), [[0.6, 0.4, 0.0], [0.4, 0.0, 0.6]])
    assert _combine("weighted_majority").argmax(-1).tolist() == [0, 2]


def test_soft_is_unweighted_mean_of_probabilities():
    expected = np.zeros((2, 3))
    for model in LOGITS:
        for n, row in enumerate(model):
            expected[n] += np.exp(row) / np.exp(row).sum() / 3
    np.testing.assert_allclose(_combine("soft"), expected)


def test_uriel_logits_is_the_weighted_sum():
    expected = 0.6 * LOGITS[0] + 0.25 * LOGITS[1] + 0.15 * LOGITS[2]
    np.testing.assert_allclose(_combine("uriel_logits"), expected)


def test_space_separated_list_options():
    assert join_list_options(["compare-ensembles", "--target-langs", "en-US", "sq-AL", "--voting-methods", "soft",
                              "majority", "-o", "x"]) == [
        "compare-ensembles", "--target-langs", "en-US,sq-AL", "--voting-methods", "soft,majority", "-o", "x"]


# ------------------------------------------------------------------- commands
def _ensemble(runner, trained, sib_dir, cache, *extra):
    return run_cli(runner, "ensemble", "--target-lang", "nl-NL", "--models", trained, "--data-dir", sib_dir,
                   "--cache-dir", cache, "--no-progress", *extra)


def _report(result) -> dict:
    return json.loads(result.output[result.output.index("{"):])


def test_ensemble_uses_merge_weights_and_matches_hand_computation(runner, trained, sib_dir, tmp_path):
    cache = tmp_path / "cache"
    result = _ensemble(runner, trained, sib_dir, cache, "--voting-method", "uriel_logits")
    assert result.exit_code == 0, result.output
    report = _report(result)
    dry = run_cli(runner, "merge", "--target-lang", "nl-NL", "--models", trained, "--output", tmp_path / "m", "--dry-run")
    merge_lines = [l.split()[:2] for l in dry.output.splitlines() if l.startswith("  ")]
    assert [[s["locale"], f"{s['weight']:.4f}"] for s in report["sources"]] == merge_lines
    assert {s["locale"] for s in report["sources"]} <= {"af-ZA", "de-DE", "sw-KE"}

    # By hand from the cached logits: Σ w · logits, argmax, accuracy.
    from merginguriel_core.evaluation import LogitsCache, Predictor
    import torch

    data = installed_registry().get("dataset", "sib200")
    examples = data.load(str(sib_dir), "nl-NL", "test")
    labels = data.labels(str(sib_dir))
    predictor = Predictor(LogitsCache(cache), torch.device("cpu"))
    combined = sum(s["weight"] * predictor.logits(trained / f"xlm-roberta-base_massive_k_{s['locale']}", examples, labels)
                   for s in report["sources"])
    gold = np.array([labels.index(l) for l in examples.labels])
    assert report["accuracy"] == pytest.approx(float(np.mean(combined.argmax(-1) == gold)))
    assert predictor.forward_passes == 0  # everything came from the cache the command filled
    assert report["best_zero_shot"]["locale"] != "nl-NL"
    assert report["best_source"]["locale"] in {s["locale"] for s in report["sources"]}


def test_ensemble_predictions_file(runner, trained, sib_dir, tmp_path):
    out = tmp_path / "not" / "yet" / "predictions.csv"  # missing folders above it are made
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--voting-method", "majority", "--predictions", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["text", "gold", "predicted"] and len(frame) == 21
    assert _report(result)["accuracy"] == pytest.approx(float((frame["gold"] == frame["predicted"]).mean()))
    again = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--predictions", out)
    assert again.exit_code == 1 and again.output == f"Error: --predictions {out} already exists; choose a new file\n"


def test_fewer_sources_than_asked_is_said_and_goes_on(runner, trained, sib_dir, tmp_path):
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--num-languages", "9")
    assert result.exit_code == 0
    assert "Note: only" in result.output and "requested source languages have a nonzero weight" in result.output


def test_unknown_voting_method(runner, trained, sib_dir, tmp_path):
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--voting-method", "vote")
    assert result.exit_code != 0
    assert "unknown --voting-method 'vote'; available: entropy_min, majority, soft, uriel_logits, weighted_majority" in result.output


def test_models_with_different_label_spaces(runner, trained, sib_dir, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained, models)
    config = models / "xlm-roberta-base_massive_k_de-DE" / "config.json"
    data = json.loads(config.read_text())
    data["id2label"]["0"], data["id2label"]["1"] = data["id2label"]["1"], data["id2label"]["0"]
    config.write_text(json.dumps(data))
    result = run_cli(runner, "ensemble", "--target-lang", "nl-NL", "--models", models, "--data-dir", sib_dir,
                     "--source-langs", "de-DE,af-ZA", "--cache-dir", tmp_path / "c", "--no-progress")
    assert result.exit_code != 0 and "they first differ at id 0" in result.output


def test_compare_ensembles_outputs_and_warm_cache(runner, trained, sib_dir, tmp_path, monkeypatch):
    out = tmp_path / "comparison"
    args = ["compare-ensembles", "--target-langs", "nl-NL", "de-DE", "--voting-methods", "majority",
            "weighted_majority", "soft", "uriel_logits", "--models", trained, "--data-dir", sib_dir,
            "--cache-dir", tmp_path / "cache", "--output", out, "--no-progress"]
    cold = run_cli(runner, *args)
    assert cold.exit_code == 0, cold.output
    table = pd.read_csv(out / "comparison.csv")
    assert len(table) == 8 and set(table["voting_method"]) == {"majority", "weighted_majority", "soft", "uriel_logits"}
    assert set(table["target"]) == {"nl-NL", "de-DE"}
    summary = {row["voting_method"]: row for row in json.loads((out / "comparison.json").read_text())["summary"]}
    for method, row in summary.items():
        accs = table.loc[table["voting_method"] == method, "accuracy"]
        assert row["mean_accuracy"] == pytest.approx(accs.mean(), abs=1e-4)
        assert row["targets"] == 2
    assert sum(row["mean_rank"] for row in summary.values()) == pytest.approx(2 * (1 + 2 + 3 + 4) / 2)
    markdown = (out / "comparison.md").read_text()
    assert markdown.startswith("| target | majority | soft | uriel_logits | weighted_majority | best source | best zero-shot |")

    # Warm cache: the whole comparison runs no model forward pass.
    import merginguriel_core.training as training

    def no_forward(*a, **k):
        raise AssertionError("a forward pass ran with a warm cache")

    monkeypatch.setattr(training, "predict_logits", no_forward)
    warm = run_cli(runner, *args, "--overwrite")
    assert warm.exit_code == 0, warm.output
    details = json.loads((out / "comparison.json").read_text())
    assert details["forward_passes"] == 0 and details["cache_hits"] > 0
    assert pd.read_csv(out / "comparison.csv").equals(table)


@pytest.mark.parametrize("weighting", ["proportional", "softmax", "local_sinkhorn"])
def test_ensemble_takes_the_signal_weightings_with_merges_weights(runner, trained, sib_dir, tmp_path, weighting):
    result = _ensemble(runner, trained, sib_dir, tmp_path / "c", "--voting-method", "uriel_logits",
                       "--weighting", weighting, "--num-languages", "2")
    assert result.exit_code == 0, result.output
    report = _report(result)
    dry = run_cli(runner, "merge", "--target-lang", "nl-NL", "--models", trained, "--output", tmp_path / "m",
                  "--dry-run", "--weighting", weighting, "--num-languages", "2")
    merge_lines = [l.split()[:2] for l in dry.output.splitlines() if l.startswith("  ")]
    assert [[s["locale"], f"{s['weight']:.4f}"] for s in report["sources"]] == merge_lines
    assert len(report["sources"]) == 2 and 0.0 <= report["accuracy"] <= 1.0


def test_compare_ensembles_passes_weighting_parameters(runner, trained, sib_dir, tmp_path):
    # `learned` needs --weighting-param nxn_matrix=PATH; compare-ensembles passes it on like ensemble.
    nxn = tmp_path / "evaluation_matrix.csv"
    locales = ["af-ZA", "de-DE", "nl-NL", "sw-KE"]
    nxn.write_text("source," + ",".join(locales) + "\n" + "".join(
        f"{s}," + ",".join("0.9" if s == t else f"{0.3 + 0.1 * ((i + j) % 3):.1f}" for j, t in enumerate(locales)) + "\n"
        for i, s in enumerate(locales)))
    out = tmp_path / "comparison"
    result = run_cli(runner, "compare-ensembles", "--target-langs", "nl-NL", "--voting-methods", "uriel_logits",
                     "--weighting", "learned", "--weighting-param", f"nxn_matrix={nxn}", "--source-langs", "de-DE,af-ZA",
                     "--models", trained, "--data-dir", sib_dir, "--cache-dir", tmp_path / "cache", "--output", out,
                     "--no-progress")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "comparison.csv")
    assert set(table["sources"].iloc[0].split()) == {"de-DE", "af-ZA"}
    missing = run_cli(runner, "compare-ensembles", "--target-langs", "nl-NL", "--weighting", "learned",
                      "--models", trained, "--data-dir", sib_dir, "--output", tmp_path / "other", "--no-progress")
    assert missing.exit_code == 1 and "needs --weighting-param nxn_matrix=PATH" in missing.output
    assert not (tmp_path / "other").exists()
