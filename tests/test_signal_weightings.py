"""Weightings that keep the similarity signal, the seed's method re-computed plainly, and
`mu similarity --explain`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, installed_registry
from merginguriel_core.errors import ConfigError
from merginguriel_core.languages import MASSIVE_LOCALES, resolve_language
from merginguriel_core.selection import select_sources
from merginguriel_core.similarity import SimilarityMatrix
from merginguriel_core.uriel import uriel_vectors

LOCALES = ["de-DE", "nl-NL", "fr-FR", "ja-JP", "sw-KE"]
# A hand-made similarity matrix: German is closest to Dutch, then French, Japanese, Swahili.
VALUES = np.array([
    [1.00, 0.90, 0.70, 0.60, 0.50],
    [0.90, 1.00, 0.80, 0.40, 0.30],
    [0.70, 0.80, 1.00, 0.50, 0.40],
    [0.60, 0.40, 0.50, 1.00, 0.20],
    [0.50, 0.30, 0.40, 0.20, 1.00],
])


@pytest.fixture
def matrix_csv(tmp_path) -> Path:
    path = tmp_path / "sim.csv"
    SimilarityMatrix(LOCALES, VALUES).to_csv(path)
    return path


def _weights(name, matrix_csv=None, target="de-DE", available=LOCALES[1:], num_languages=5, top_k=20,
             params=None, sinkhorn_iters=20, features="syntax_knn"):
    selection = select_sources(installed_registry().get("weighting", name), target=target, available=available,
                               num_languages=num_languages, top_k=top_k, similarity_matrix=matrix_csv,
                               weighting_params=params or {}, sinkhorn_iters=sinkhorn_iters, features=features)
    return dict(selection.result.weights), selection.result


# ------------------------------------------------------------------ the seed, plainly
def test_seed_method_matches_a_plain_recomputation():
    """cos → (s+1)/2 → top-20 per row (diagonal 0) → 20 × (rows, then columns) → German's
    row over five available models, renormalised: written out with loops, no library code."""
    languages = [resolve_language(code) for code in MASSIVE_LOCALES]
    vectors = uriel_vectors(languages, "syntax_knn")
    n = len(languages)
    sim = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            dot = sum(a * b for a, b in zip(vectors[i], vectors[j]))
            norm = math.sqrt(sum(a * a for a in vectors[i])) * math.sqrt(sum(b * b for b in vectors[j]))
            sim[i][j] = (dot / norm + 1) / 2 if norm else 0.5
    for i in range(n):
        sim[i][i] = 0.0
        kth = sorted(sim[i], reverse=True)[19]
        sim[i] = [v if v >= kth else 0.0 for v in sim[i]]
    for _ in range(20):
        sim = [[v / sum(row) for v in row] for row in sim]
        columns = [sum(sim[i][j] for i in range(n)) for j in range(n)]
        sim = [[sim[i][j] / columns[j] for j in range(n)] for i in range(n)]
    row = sim[MASSIVE_LOCALES.index("de-DE")]
    available = ["nl-NL", "da-DK", "sv-SE", "fr-FR", "ja-JP", "ka-GE", "af-ZA"]
    chosen = sorted(available, key=lambda code: -row[MASSIVE_LOCALES.index(code)])[:5]
    chosen = [code for code in chosen if row[MASSIVE_LOCALES.index(code)] > 0]
    total = sum(row[MASSIVE_LOCALES.index(code)] for code in chosen)
    expected = {code: row[MASSIVE_LOCALES.index(code)] / total for code in chosen}
    got, _ = _weights("uriel", available=available)
    assert list(got) == list(expected)
    for code in expected:
        assert got[code] == pytest.approx(expected[code], rel=1e-9)


# ------------------------------------------------------------- new weightings, by hand
def test_proportional_by_hand(matrix_csv):
    got, result = _weights("proportional", matrix_csv, num_languages=3)
    assert got == pytest.approx({"nl-NL": 0.9 / 2.2, "fr-FR": 0.7 / 2.2, "ja-JP": 0.6 / 2.2})
    squared, _ = _weights("proportional", matrix_csv, num_languages=3, params={"power": "2"})
    assert squared == pytest.approx({"nl-NL": 0.81 / 1.66, "fr-FR": 0.49 / 1.66, "ja-JP": 0.36 / 1.66})
    flat, _ = _weights("proportional", matrix_csv, num_languages=3, params={"power": "0"})
    assert flat == pytest.approx({"nl-NL": 1 / 3, "fr-FR": 1 / 3, "ja-JP": 1 / 3})
    assert result.details["raw_similarity"] == pytest.approx({"nl-NL": 0.9, "fr-FR": 0.7, "ja-JP": 0.6})


def test_top_k_and_num_languages_both_cut_the_candidates(matrix_csv):
    got, result = _weights("proportional", matrix_csv, num_languages=5, top_k=2)
    assert got == pytest.approx({"nl-NL": 0.9 / 1.6, "fr-FR": 0.7 / 1.6})
    assert any("only 2 of the 5" in note for note in result.notes)


def test_softmax_by_hand(matrix_csv):
    got, _ = _weights("softmax", matrix_csv, params={"temperature": "0.1"})
    exps = {code: math.exp(s / 0.1) for code, s in zip(LOCALES[1:], VALUES[0, 1:])}
    total = sum(exps.values())
    assert got == pytest.approx({code: e / total for code, e in exps.items()})
    with pytest.raises(ConfigError, match="temperature"):
        _weights("softmax", matrix_csv, params={"temperature": "0"})


def test_local_sinkhorn_by_hand(matrix_csv):
    # Target de plus its two most similar (nl, fr): Sinkhorn on that 3 × 3 block, diagonal 0.
    block = [[0.0, 0.9, 0.7], [0.9, 0.0, 0.8], [0.7, 0.8, 0.0]]
    for _ in range(3):
        block = [[v / sum(row) for v in row] for row in block]
        columns = [sum(block[i][j] for i in range(3)) for j in range(3)]
        block = [[block[i][j] / columns[j] for j in range(3)] for i in range(3)]
    row = block[0][1:]
    got, result = _weights("local_sinkhorn", matrix_csv, num_languages=2, sinkhorn_iters=3)
    assert got == pytest.approx({"nl-NL": row[0] / sum(row), "fr-FR": row[1] / sum(row)})
    steps = dict(result.trace.steps)
    assert steps["sinkhorn"][result.trace.locales.index("nl-NL")] == pytest.approx(row[0])


def test_local_sinkhorn_with_the_target_as_a_candidate(matrix_csv):
    # --include-target: the target joins its candidates once, keeping its self-similarity.
    block = [[1.0, 0.9], [0.9, 1.0]]
    for _ in range(20):
        block = [[v / sum(row) for v in row] for row in block]
        columns = [sum(block[i][j] for i in range(2)) for j in range(2)]
        block = [[block[i][j] / columns[j] for j in range(2)] for i in range(2)]
    selection = select_sources(installed_registry().get("weighting", "local_sinkhorn"), target="de-DE", available=LOCALES,
                               num_languages=2, similarity_matrix=matrix_csv, include_target=True)
    got = dict(selection.result.weights)
    row = block[0]
    assert got == pytest.approx({"de-DE": row[0] / sum(row), "nl-NL": row[1] / sum(row)})


def test_proportional_power_underflow_is_named():
    from merginguriel_core.maths.weights import proportional_weights

    with pytest.raises(ConfigError, match="similarity\\^10000 underflows to 0 for every candidate; choose a smaller power"):
        proportional_weights(np.array([0.9, 0.7]), 10000)


def _nxn(tmp_path) -> Path:
    # accuracy(source → target) = 0.2 + 0.5 · similarity exactly, except into de-DE, which
    # is noise that the fit for target de-DE must not see.
    rows = LOCALES
    lines = ["source," + ",".join(rows)]
    for i, source in enumerate(rows):
        cells = []
        for j, target in enumerate(rows):
            value = 0.95 if i == j else (0.2 + 0.5 * VALUES[i, j] if target != "de-DE" else 0.99 - 0.3 * (i % 2))
            cells.append(f"{value:.4f}")
        lines.append(source + "," + ",".join(cells))
    path = tmp_path / "evaluation_matrix.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_learned_fits_accuracy_without_the_targets_results(matrix_csv, tmp_path):
    nxn = _nxn(tmp_path)
    got, result = _weights("learned", matrix_csv, num_languages=3, params={"nxn_matrix": str(nxn)})
    fit = result.details["fit"]
    assert fit["intercept"] == pytest.approx(0.2, abs=1e-4) and fit["slope"] == pytest.approx(0.5, abs=1e-4)
    assert fit["pairs"] == 12  # 5 × 4 off-diagonal pairs minus the 8 into or out of de-DE
    predicted = {code: 0.2 + 0.5 * s for code, s in zip(["nl-NL", "fr-FR", "ja-JP"], [0.9, 0.7, 0.6])}
    total = sum(predicted.values())
    assert got == pytest.approx({code: p / total for code, p in predicted.items()}, abs=1e-4)
    steps, locales = dict(result.trace.steps), result.trace.locales
    assert steps["predicted accuracy"][locales.index("fr-FR")] == pytest.approx(0.55, abs=1e-4)
    assert math.isnan(steps["predicted accuracy"][locales.index("sw-KE")])  # not a candidate: "—"
    assert steps["candidates"][locales.index("sw-KE")] == 0.0
    with pytest.raises(ConfigError, match="needs --weighting-param nxn_matrix=PATH"):
        _weights("learned", matrix_csv)
    with pytest.raises(ConfigError, match="does not exist"):
        _weights("learned", matrix_csv, params={"nxn_matrix": str(tmp_path / "missing.csv")})


@pytest.mark.parametrize("name, params", [
    ("proportional", {}), ("proportional", {"power": "3"}), ("softmax", {}), ("softmax", {"temperature": "0.01"}),
])
@pytest.mark.parametrize("target", ["de-DE", "sw-KE", "ja-JP", "fi-FI"])
def test_a_more_similar_language_never_gets_less_weight(name, params, target):
    available = [code for code in MASSIVE_LOCALES if code != target]
    got, result = _weights(name, target=target, available=available, num_languages=8, params=params)
    similarity = result.details["raw_similarity"]
    ordered = sorted(got, key=lambda code: -similarity[code])
    assert [got[code] for code in ordered] == sorted(got.values(), reverse=True)
    assert sum(got.values()) == pytest.approx(1.0)


def test_signal_weightings_put_dutch_first_for_german_where_the_seed_puts_georgian():
    available = [code for code in MASSIVE_LOCALES if code != "de-DE"]
    seed, _ = _weights("uriel", available=available)
    assert next(iter(seed)) == "ka-GE"
    for name in ("proportional", "softmax", "local_sinkhorn"):
        got, _ = _weights(name, available=available)
        assert next(iter(got)) == "nl-NL", name
        assert "ka-GE" not in got
    # German plus five sources: Japanese no longer weighs about as much as Dutch.
    five = ["nl-NL", "da-DK", "sv-SE", "fr-FR", "ja-JP"]
    got, _ = _weights("softmax", available=five)
    assert got["nl-NL"] == pytest.approx(0.464, abs=5e-4) and got["ja-JP"] == pytest.approx(0.008, abs=5e-4)
    got, _ = _weights("softmax", available=available)
    assert list(got)[:2] == ["nl-NL", "da-DK"]
    assert got["nl-NL"] == pytest.approx(0.341, abs=5e-4) and got["da-DK"] == pytest.approx(0.185, abs=5e-4)


def test_feature_combinations_work_with_every_new_weighting():
    for name in ("proportional", "softmax", "local_sinkhorn"):
        got, result = _weights(name, available=["nl-NL", "ja-JP", "fr-FR"], features="syntax_knn+phonology_knn")
        assert set(got) == {"nl-NL", "ja-JP", "fr-FR"} and result.details["features"] == "syntax_knn+phonology_knn"


# --------------------------------------------------------------------------- --explain
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("weighting", ["uriel", "average", "proportional", "softmax", "local_sinkhorn", "manual"])
def test_explain_prints_every_step_and_writes_a_png(runner, zoo_dir, tmp_path, weighting):
    plot = tmp_path / "w.png"
    extra = ("--weights", "nl-NL=3,fr-FR=1") if weighting == "manual" else ()
    result = run_cli(runner, "similarity", "--target-lang", "de-DE", "--models", zoo_dir, "--explain",
                     "--weighting", weighting, "--plot", plot, *extra)
    assert result.exit_code == 0, result.output
    steps = {"uriel": "similarity -> top-k -> sinkhorn -> available -> final",
             "average": "similarity -> uriel weight -> final",
             "proportional": "similarity -> available -> candidates -> final",
             "softmax": "similarity -> available -> candidates -> final",
             "local_sinkhorn": "similarity -> available -> candidates -> sinkhorn -> final",
             "manual": "similarity -> final"}[weighting]
    assert f"weighting {weighting}; steps: {steps}" in result.stdout
    assert plot.read_bytes()[:8] == PNG and plot.stat().st_size > 5000
    selected = result.stdout.split("Selected: ")[1].splitlines()[0]
    if weighting == "manual":
        assert selected == "nl-NL 0.7500, fr-FR 0.2500"
    if weighting in ("proportional", "softmax", "local_sinkhorn"):
        assert selected.startswith("nl-NL ")  # the zoo's most similar language to German
        assert "ja-JP" not in selected  # never among German's five most similar zoo languages


def test_explain_json_and_existing_plot(runner, zoo_dir, tmp_path):
    plot = tmp_path / "w.png"
    plot.write_bytes(b"mine")
    result = run_cli(runner, "similarity", "--target-lang", "de-DE", "--explain", "--weighting", "softmax",
                     "--plot", plot)
    assert result.exit_code == 1
    assert f"--plot {plot} already exists; choose another path or pass --overwrite" in result.output
    assert plot.read_bytes() == b"mine"
    result = run_cli(runner, "similarity", "--target-lang", "de-DE", "--explain", "--weighting", "softmax",
                     "--plot", plot, "--overwrite", "--json", "--models", zoo_dir)
    data = json.loads(result.stdout)
    assert data["steps"] == ["similarity", "available", "candidates", "final"]
    first = data["languages"][0]
    assert first["locale"] == "nl-NL" and first["final"] == pytest.approx(data["selected"][0][1])
    unavailable = [row for row in data["languages"] if row["locale"] == "it-IT"][0]
    assert unavailable["available"] == 0.0 and unavailable["final"] == 0.0
    assert plot.read_bytes()[:8] == PNG


@pytest.mark.parametrize("args, message", [
    (("--weighting", "softmax"), "--weighting, --weighting-param, --weights, --source-langs, --target-text, --target-text-split, --data-dir and --plot go with --explain"),
    (("--explain", "--weighting", "nope"), "unknown --weighting 'nope'; available: adamerging, average, learned, local_sinkhorn"),
    (("--explain", "--plot", "x.jpg"), "--plot x.jpg must end in .png"),
    (("--explain", "--weighting", "softmax", "--weighting-param", "temperature=-1"), "temperature"),
])
def test_explain_bad_input(runner, tmp_path, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(runner, "similarity", "--target-lang", "de-DE", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert not list(tmp_path.glob("*.png"))


def test_merge_and_ensemble_accept_the_new_weightings(runner, zoo_dir, tmp_path):
    out = tmp_path / "merged"
    result = run_cli(runner, "merge", "--target-lang", "de-DE", "--models", zoo_dir, "--weighting", "softmax",
                     "--weighting-param", "temperature=0.02", "--num-languages", "3", "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output
    details = json.loads((out / "merge_details.json").read_text())
    assert details["weighting"] == "softmax"
    assert [s["locale"] for s in details["sources"]][0] == "nl-NL"
    assert sum(s["weight"] for s in details["sources"]) == pytest.approx(1.0)
    assert details["weighting_details"]["params"] == {"temperature": 0.02}
