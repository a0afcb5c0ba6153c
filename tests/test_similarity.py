"""Tests for merginguriel_core.similarity: maths, the CSV file, the seed's weighting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from merginguriel_core.errors import ConfigError, LanguageError
from merginguriel_core.languages import MASSIVE_LOCALES
from merginguriel_core.similarity import (
    SimilarityMatrix,
    cosine_similarity_matrix,
    sinkhorn,
    top_k_per_row,
    uriel_similarity_matrix,
    uriel_weights,
)

# ---------------------------------------------------------------- cosine


def test_cosine_on_hand_vectors() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0], [-1.0, 0.0]])
    h = np.sqrt(0.5)
    expected = np.array(
        [
            [1.0, 0.0, h, 0.0, -1.0],
            [0.0, 1.0, h, 0.0, 0.0],
            [h, h, 1.0, 0.0, -h],
            [0.0, 0.0, 0.0, 0.0, 0.0],  # the zero vector is similar to nothing, not even itself
            [-1.0, 0.0, -h, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(cosine_similarity_matrix(vectors), expected, atol=1e-12)


def test_cosine_rejects_a_one_dimensional_array() -> None:
    with pytest.raises(ConfigError, match="2-D"):
        cosine_similarity_matrix(np.ones(3))


# ---------------------------------------------------------------- top-k

HAND = np.array(
    [
        [1.0, 0.9, 0.5, 0.7],
        [0.9, 1.0, 0.6, 0.6],
        [0.5, 0.6, 1.0, 0.8],
        [0.7, 0.6, 0.8, 1.0],
    ]
)


def test_top_k_zeroes_the_diagonal_and_keeps_the_k_largest() -> None:
    expected = np.array(
        [
            [0.0, 0.9, 0.0, 0.7],
            [0.9, 0.0, 0.6, 0.6],  # 0.6 ties at the 2nd place: both kept
            [0.0, 0.6, 0.0, 0.8],
            [0.7, 0.0, 0.8, 0.0],
        ]
    )
    np.testing.assert_array_equal(top_k_per_row(HAND, 2), expected)


def test_top_k_can_keep_the_diagonal() -> None:
    expected = np.array(
        [
            [1.0, 0.9, 0.0, 0.0],
            [0.9, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.8],
            [0.0, 0.0, 0.8, 1.0],
        ]
    )
    np.testing.assert_array_equal(top_k_per_row(HAND, 2, keep_diagonal=True), expected)


def test_top_k_at_least_the_row_length_keeps_everything_but_the_diagonal() -> None:
    expected = HAND.copy()
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_array_equal(top_k_per_row(HAND, 3), expected)
    np.testing.assert_array_equal(top_k_per_row(HAND, 10), expected)


def test_top_k_does_not_change_its_input_and_rejects_k_below_one() -> None:
    before = HAND.copy()
    top_k_per_row(HAND, 1)
    np.testing.assert_array_equal(HAND, before)
    with pytest.raises(ConfigError, match="top-k must be at least 1, got 0"):
        top_k_per_row(HAND, 0)


# ---------------------------------------------------------------- Sinkhorn


def test_one_sinkhorn_iteration_by_hand() -> None:
    # rows: [1/3, 2/3], [3/7, 4/7]; column sums 16/21 and 26/21.
    expected = np.array([[7 / 16, 14 / 26], [9 / 16, 12 / 26]])
    np.testing.assert_allclose(sinkhorn(np.array([[1.0, 2.0], [3.0, 4.0]]), 1), expected)


def test_sinkhorn_converges_to_doubly_stochastic_on_a_positive_matrix() -> None:
    matrix = np.random.default_rng(7).uniform(0.1, 1.0, size=(6, 6))
    result = sinkhorn(matrix, 200)
    np.testing.assert_allclose(result.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(result.sum(axis=1), 1.0, atol=1e-9)
    # Sinkhorn only rescales rows and columns: the cross ratios are unchanged.
    ratio = lambda m: m[0, 0] * m[1, 1] / (m[0, 1] * m[1, 0])  # noqa: E731
    assert ratio(result) == pytest.approx(ratio(matrix))


def test_sinkhorn_keeps_all_zero_rows_and_columns_zero() -> None:
    matrix = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 3.0]])
    result = sinkhorn(matrix, 50)
    assert np.all(np.isfinite(result))
    assert np.all(result[0] == 0.0) and np.all(result[:, 0] == 0.0)
    np.testing.assert_allclose(result[1:, 1:].sum(axis=0), 1.0)


def test_zero_sinkhorn_iterations_is_a_copy() -> None:
    matrix = np.array([[1.0, 2.0], [3.0, 4.0]])
    result = sinkhorn(matrix, 0)
    np.testing.assert_array_equal(result, matrix)
    assert result is not matrix


def test_sinkhorn_rejects_negative_iterations_and_entries() -> None:
    with pytest.raises(ConfigError, match="got -1"):
        sinkhorn(np.eye(2), -1)
    with pytest.raises(ConfigError, match="found entry -0.5"):
        sinkhorn(np.array([[1.0, -0.5], [0.0, 1.0]]), 1)


# ---------------------------------------------------------------- SimilarityMatrix and CSV


def small_matrix() -> SimilarityMatrix:
    values = np.array([[1.0, 0.25, 1 / 3], [0.25, 1.0, 0.1], [1 / 3, 0.1, 1.0]])
    return SimilarityMatrix(locales=["de-DE", "nl-NL", "sw-KE"], values=values)


def test_index_and_row_accept_any_spelling() -> None:
    matrix = small_matrix()
    assert matrix.index("swh_Latn") == 2
    assert matrix.index("nl") == 1
    np.testing.assert_array_equal(matrix.row("deu"), [1.0, 0.25, 1 / 3])


def test_index_of_a_language_not_in_the_matrix() -> None:
    with pytest.raises(LanguageError, match="'fr' is not in the similarity matrix; it has: de-DE"):
        small_matrix().index("fr")


def test_matrix_rejects_wrong_shape_and_duplicates() -> None:
    with pytest.raises(ConfigError, match=r"shape \(2, 2\), expected \(3, 3\)"):
        SimilarityMatrix(locales=["de-DE", "nl-NL", "sw-KE"], values=np.eye(2))
    with pytest.raises(ConfigError, match="de-DE more than once"):
        SimilarityMatrix(locales=["de-DE", "de-DE"], values=np.eye(2))


def test_csv_round_trip_is_exact(tmp_path: Path) -> None:
    values = np.random.default_rng(3).uniform(0.0, 1.0, size=(3, 3))
    matrix = SimilarityMatrix(locales=["de-DE", "nl-NL", "sw-KE"], values=values)
    path = tmp_path / "sim.csv"
    matrix.to_csv(path)
    back = SimilarityMatrix.from_csv(path)
    assert back.locales == matrix.locales
    np.testing.assert_array_equal(back.values, values)
    assert path.read_text().splitlines()[0] == ",de-DE,nl-NL,sw-KE"
    assert [entry.name for entry in tmp_path.iterdir()] == ["sim.csv"]  # no temp file left


def test_to_csv_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.csv"
    path.write_text("old")
    small_matrix().to_csv(path)
    assert SimilarityMatrix.from_csv(path).locales == ["de-DE", "nl-NL", "sw-KE"]


def test_to_csv_failure_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "sim.csv"
    path.write_text("old")
    broken = small_matrix()
    broken.locales = ["de-DE", "nl-NL"]  # one locale short: writing fails part way
    with pytest.raises(ValueError):
        broken.to_csv(path)
    assert path.read_text() == "old"
    assert [entry.name for entry in tmp_path.iterdir()] == ["sim.csv"]


def test_from_csv_normalises_codes(tmp_path: Path) -> None:
    path = tmp_path / "seed.csv"
    path.write_text(",deu_Latn,nl,SW_ke\ndeu_Latn,1.0,0.5,0.2\nnl,0.5,1,0.3\nSW_ke,0.2,0.3,1\n")
    matrix = SimilarityMatrix.from_csv(path)
    assert matrix.locales == ["de-DE", "nl-NL", "sw-KE"]
    assert matrix.values[2, 1] == 0.3


BAD_FILES = {
    "not square": (",de-DE,nl-NL\nde-DE,1,0.5\n", "has 2 columns but 1 rows"),
    "ragged": (",de-DE,nl-NL\nde-DE,1,0.5\nnl-NL,0.5\n", "line 3 has 2 cells, expected 3"),
    "rows differ": (
        ",de-DE,nl-NL\nde-DE,1,0.5\nfr-FR,0.5,1\n",
        "row 2 is 'fr-FR' but column 2 is 'nl-NL'",
    ),
    "duplicate": (",de-DE,deu\nde-DE,1,0.5\ndeu,0.5,1\n", "lists de-DE more than once"),
    "text": (
        ",de-DE,nl-NL\nde-DE,1,high\nnl-NL,0.5,1\n",
        "value 'high' at row 'de-DE', column 'nl-NL'",
    ),
    "nan": (",de-DE,nl-NL\nde-DE,1,nan\nnl-NL,0.5,1\n", "value 'nan' at row 'de-DE'"),
    "inf": (
        ",de-DE,nl-NL\nde-DE,1,0.5\nnl-NL,inf,1\n",
        "value 'inf' at row 'nl-NL', column 'de-DE'",
    ),
    "above one": (",de-DE,nl-NL\nde-DE,1.5,0.5\nnl-NL,0.5,1\n", "value '1.5'"),
    "negative": (",de-DE,nl-NL\nde-DE,1,-0.1\nnl-NL,0.5,1\n", "value '-0.1'"),
    "empty": ("", "has no header row of language codes"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_from_csv_errors_name_the_file_and_the_bad_value(tmp_path: Path, case: str) -> None:
    text, expected = BAD_FILES[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        SimilarityMatrix.from_csv(path)
    message = str(caught.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_from_csv_unknown_code_is_a_language_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(",de-DE,xx-YY\nde-DE,1,0.5\nxx-YY,0.5,1\n")
    with pytest.raises(LanguageError, match=r"bad\.csv'.*unknown language code 'xx-YY'"):
        SimilarityMatrix.from_csv(path)


def test_from_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read similarity matrix .*nope\.csv"):
        SimilarityMatrix.from_csv(tmp_path / "nope.csv")


# ---------------------------------------------------------------- URIEL similarity


@pytest.fixture(scope="module")
def massive() -> SimilarityMatrix:
    return uriel_similarity_matrix(MASSIVE_LOCALES)


def test_uriel_similarity_matrix_over_massive(massive: SimilarityMatrix) -> None:
    assert massive.locales == list(MASSIVE_LOCALES)
    values = massive.values
    np.testing.assert_array_equal(values, values.T)
    np.testing.assert_allclose(np.diag(values), 1.0, rtol=0, atol=1e-15)
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert values[massive.index("zh-CN"), massive.index("zh-TW")] == pytest.approx(1.0, abs=1e-15)
    german = massive.row("de-DE")
    assert german[massive.index("nl-NL")] == pytest.approx(0.98823, abs=1e-5)
    # Dutch is German's most similar language in the raw matrix.
    german[massive.index("de-DE")] = 0.0
    assert massive.locales[int(np.argmax(german))] == "nl-NL"


def test_uriel_similarity_matrix_accepts_any_spelling() -> None:
    matrix = uriel_similarity_matrix(["deu", "swh_Latn"])
    assert matrix.locales == ["de-DE", "sw-KE"]
    with pytest.raises(ConfigError, match="sw-KE more than once"):
        uriel_similarity_matrix(["sw", "swh"])


# ---------------------------------------------------------------- the seed's weights


def ranked(values: np.ndarray, locales: list[str]) -> list[str]:
    return [locales[j] for j in sorted(range(len(locales)), key=lambda j: -values[j])]


def test_issue_fact_german_puts_georgian_first_and_dutch_fourth(massive: SimilarityMatrix) -> None:
    trace = uriel_weights(massive, "de-DE", MASSIVE_LOCALES, num_languages=5)
    assert [locale for locale, _ in trace.selected] == ["ka-GE", "af-ZA", "lv-LV", "nl-NL", "en-US"]
    assert ranked(trace.after_sinkhorn, trace.locales)[:4] == ["ka-GE", "af-ZA", "lv-LV", "nl-NL"]
    sinkhorn_weight = dict(zip(trace.locales, trace.after_sinkhorn, strict=True))
    assert sinkhorn_weight["ka-GE"] == pytest.approx(0.1203, abs=1e-4)
    assert sinkhorn_weight["nl-NL"] == pytest.approx(0.0555, abs=1e-4)
    assert ranked(trace.raw, trace.locales)[1] == "nl-NL"  # first is German itself


def test_issue_fact_swahili_top_weight_goes_to_persian(massive: SimilarityMatrix) -> None:
    trace = uriel_weights(massive, "sw-KE", MASSIVE_LOCALES)
    assert trace.selected[0][0] == "fa-IR"
    assert trace.selected[0][1] == pytest.approx(0.3432, abs=1e-4)
    # ... although Hebrew and Arabic are more similar in the raw matrix.
    raw = dict(zip(trace.locales, trace.raw, strict=True))
    assert raw["he-IL"] > raw["ar-SA"] > raw["fa-IR"]


def test_issue_fact_japanese_weighs_about_as_much_as_dutch() -> None:
    matrix = uriel_similarity_matrix(["de-DE", "nl-NL", "da-DK", "sv-SE", "fr-FR", "ja-JP"])
    trace = uriel_weights(matrix, "de-DE", ["nl-NL", "da-DK", "sv-SE", "fr-FR", "ja-JP"])
    weights = dict(trace.selected)
    assert weights["nl-NL"] == pytest.approx(0.2041, abs=1e-4)
    assert weights["ja-JP"] == pytest.approx(0.2015, abs=1e-4)
    assert max(weights.values()) - min(weights.values()) < 0.008


def test_weights_follow_the_pipeline_by_hand() -> None:
    values = np.array(
        [
            [1.0, 0.9, 0.5, 0.7],
            [0.9, 1.0, 0.6, 0.6],
            [0.5, 0.6, 1.0, 0.8],
            [0.7, 0.6, 0.8, 1.0],
        ]
    )
    matrix = SimilarityMatrix(locales=["de-DE", "nl-NL", "fr-FR", "ja-JP"], values=values)
    trace = uriel_weights(
        matrix, "de", ["nl", "fr", "ja"], top_k=2, sinkhorn_iters=3, num_languages=2
    )
    expected_row = sinkhorn(top_k_per_row(values, 2), 3)[0]
    np.testing.assert_array_equal(trace.raw, values[0])
    np.testing.assert_array_equal(trace.after_top_k, [0.0, 0.9, 0.0, 0.7])
    np.testing.assert_allclose(trace.after_sinkhorn, expected_row)
    nl, ja = expected_row[1], expected_row[3]
    assert trace.selected == [
        ("nl-NL", pytest.approx(nl / (nl + ja))),
        ("ja-JP", pytest.approx(ja / (nl + ja))),
    ]
    assert trace.target == "de-DE" and trace.notes == []


def test_identical_vector_locale_stays_a_candidate(massive: SimilarityMatrix) -> None:
    trace = uriel_weights(massive, "zh-TW", MASSIVE_LOCALES)
    chosen = [locale for locale, _ in trace.selected]
    assert "zh-TW" not in chosen
    assert chosen[0] == "zh-CN"


def test_selected_weights_sum_to_one_in_descending_order(massive: SimilarityMatrix) -> None:
    for target in ("en-US", "ja-JP", "am-ET"):
        weights = [weight for _, weight in uriel_weights(massive, target, MASSIVE_LOCALES).selected]
        assert sum(weights) == pytest.approx(1.0)
        assert weights == sorted(weights, reverse=True)
        assert len(weights) == 5


def test_include_target_keeps_the_diagonal(massive: SimilarityMatrix) -> None:
    trace = uriel_weights(massive, "de-DE", MASSIVE_LOCALES, include_target=True)
    assert trace.after_top_k[massive.index("de-DE")] == pytest.approx(1.0)
    # German is in 31 of the 52 rows' top-20, so column normalisation shrinks its weight.
    assert trace.selected[-1][0] == "de-DE"
    assert trace.selected[-1][1] == pytest.approx(0.1217, abs=1e-4)
    excluded = uriel_weights(massive, "de-DE", MASSIVE_LOCALES)
    assert excluded.after_top_k[massive.index("de-DE")] == 0.0


def test_fewer_sources_than_asked_uses_what_exists(massive: SimilarityMatrix) -> None:
    trace = uriel_weights(massive, "de-DE", ["nl", "af", "de"], num_languages=5)
    assert [locale for locale, _ in trace.selected] == ["af-ZA", "nl-NL"]
    assert trace.notes == [
        "only 2 of the 5 requested source languages have a nonzero weight; using those"
    ]


def test_sources_missing_from_the_matrix_are_noted() -> None:
    matrix = uriel_similarity_matrix(["de-DE", "nl-NL"])
    trace = uriel_weights(matrix, "de-DE", ["nl-NL", "fr-FR"], num_languages=1)
    assert trace.selected == [("nl-NL", 1.0)]
    assert "source fr-FR is not in the similarity matrix; skipped" in trace.notes


def test_no_source_with_nonzero_weight_names_the_available(massive: SimilarityMatrix) -> None:
    # Japanese is not among German's 20 nearest languages, so top-k zeroes it.
    with pytest.raises(ConfigError) as caught:
        uriel_weights(massive, "de-DE", ["ja-JP", "de-DE"])
    message = str(caught.value)
    assert "no available source language has a nonzero URIEL weight for de-DE" in message
    assert "available: de-DE, ja-JP" in message


def test_weight_errors(massive: SimilarityMatrix) -> None:
    with pytest.raises(ConfigError, match="at least 1, got 0"):
        uriel_weights(massive, "de-DE", MASSIVE_LOCALES, num_languages=0)
    small = uriel_similarity_matrix(["de-DE", "nl-NL"])
    with pytest.raises(LanguageError, match="'fr-FR' is not in the similarity matrix"):
        uriel_weights(small, "fr-FR", ["nl-NL"])
