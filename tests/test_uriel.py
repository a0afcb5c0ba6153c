"""Tests for merginguriel_core.uriel: feature specs, vectors, the pkg_resources shim."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from merginguriel_core import uriel
from merginguriel_core.errors import ConfigError, LanguageError
from merginguriel_core.languages import LANGUAGES, Language, resolve_language
from merginguriel_core.uriel import FEATURE_SETS, parse_features, uriel_vectors

REPO = Path(__file__).resolve().parents[1]


def test_parse_single_and_combined_feature_sets() -> None:
    assert parse_features("syntax_knn") == ("syntax_knn",)
    assert parse_features("syntax_knn+phonology_knn") == ("syntax_knn", "phonology_knn")
    assert parse_features(" geo + fam ") == ("geo", "fam")


@pytest.mark.parametrize("spec", ["syntax", "syntax_knn+", "", "learned", "id", "Syntax_KNN"])
def test_parse_rejects_unknown_sets_and_lists_the_allowed_ones(spec: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_features(spec)
    message = str(caught.value)
    assert "unknown URIEL feature set" in message
    assert "syntax_knn, phonology_knn, inventory_knn" in message
    assert "\n" not in message


def test_parse_rejects_a_set_named_twice() -> None:
    with pytest.raises(ConfigError, match="twice"):
        parse_features("syntax_knn+syntax_knn")


def test_feature_sets_offer_knn_observed_and_family_geography() -> None:
    assert FEATURE_SETS[0] == "syntax_knn"
    assert {"phonology_knn", "inventory_knn", "syntax_wals", "fam", "geo"} <= set(FEATURE_SETS)
    assert "id" not in FEATURE_SETS and "learned" not in FEATURE_SETS


def test_every_massive_language_has_a_nonzero_syntax_knn_vector() -> None:
    vectors = uriel_vectors(LANGUAGES)
    assert vectors.shape == (52, 103)
    assert vectors.dtype == np.float64
    assert np.all(np.linalg.norm(vectors, axis=1) > 0)
    assert set(np.unique(vectors)) == {0.0, 1.0}


def test_known_syntax_knn_values() -> None:
    german, japanese = uriel_vectors([resolve_language("de"), resolve_language("ja")])
    # S_SVO S_SOV S_VSO S_VOS S_OVS S_OSV S_SUBJECT_BEFORE_VERB S_SUBJECT_AFTER_VERB:
    # German is both SVO and SOV, Japanese SOV; both put the subject before the verb.
    assert german[:8].tolist() == [1, 1, 0, 0, 0, 0, 1, 0]
    assert japanese[:8].tolist() == [0, 1, 0, 0, 0, 0, 1, 0]
    assert int(german.sum()) == 43


def test_chinese_locales_get_identical_vectors() -> None:
    simplified, traditional = uriel_vectors([resolve_language("zh-CN"), resolve_language("zh-TW")])
    np.testing.assert_array_equal(simplified, traditional)


def test_concatenated_sets_put_the_parts_side_by_side() -> None:
    languages = [resolve_language("de"), resolve_language("sw")]
    syntax = uriel_vectors(languages, "syntax_knn")
    phonology = uriel_vectors(languages, "phonology_knn")
    both = uriel_vectors(languages, "syntax_knn+phonology_knn")
    np.testing.assert_array_equal(both, np.hstack([syntax, phonology]))
    assert both.shape == (2, 103 + phonology.shape[1])


def test_missing_values_read_as_zero() -> None:
    # WALS records only some syntax features for Swahili; lang2vec marks the rest -1.
    database = uriel._npz("features.npz")
    row = list(database["langs"]).index("swa")
    wals = list(database["sources"]).index("WALS")
    syntax = [i for i, name in enumerate(database["feats"]) if name.startswith("S_")]
    raw = database["data"][row, syntax, wals]
    vector = uriel_vectors([resolve_language("sw")], "syntax_wals")[0]
    assert np.count_nonzero(raw == -1) > 0
    np.testing.assert_array_equal(vector, np.where(raw == -1, 0.0, raw))


def test_vectors_are_cached_and_read_only() -> None:
    language = resolve_language("fr")
    first = uriel._vector(language.iso639_3, ("syntax_knn",))
    assert uriel._vector(language.iso639_3, ("syntax_knn",)) is first
    assert not first.flags.writeable
    returned = uriel_vectors([language])
    returned[0, 0] = 99.0  # the caller's copy may change; the cache may not
    assert uriel_vectors([language])[0, 0] != 99.0


def test_language_missing_from_uriel_raises() -> None:
    unknown = Language(locale="qqq", iso639_3="qqq", flores=None, name="Nowhere")
    with pytest.raises(
        LanguageError, match="'qqq' has no URIEL vector in feature set 'syntax_knn'"
    ):
        uriel_vectors([unknown])


def test_no_languages_gives_an_empty_matrix_of_the_right_width() -> None:
    assert uriel_vectors([], "syntax_knn").shape == (0, 103)


def test_resource_filename_finds_lang2vec_data_from_module_or_package() -> None:
    from_module = uriel._resource_filename("lang2vec.lang2vec", "data/letter_codes.json")
    from_package = uriel._resource_filename("lang2vec", "data/letter_codes.json")
    assert from_module == from_package
    assert Path(from_module).is_file()


def test_shim_lets_lang2vec_import_and_agrees_with_our_vectors() -> None:
    """In a fresh interpreter with any real pkg_resources hidden, force the shim path."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        sys.modules["pkg_resources"] = None  # hide a real pkg_resources if there is one
        from merginguriel_core import uriel
        from merginguriel_core.languages import resolve_language
        l2v = uriel.load_lang2vec()
        assert sys.modules["pkg_resources"].__doc__.startswith("MergingUriel stand-in")
        expected = {name: l2v.FEATURE_SETS_DICT[name] for name in uriel.FEATURE_SETS}
        assert expected == uriel._LOCATIONS, "feature set table drifted from lang2vec"
        codes = ["de", "sw", "zh-TW", "he", "ar"]
        languages = [resolve_language(code) for code in codes]
        spec = "syntax_knn+phonology_wals+geo"
        theirs = l2v.get_features([lang.iso639_3 for lang in languages], spec)
        ours = uriel.uriel_vectors(languages, spec)
        for language, row in zip(languages, ours):
            values = [0.0 if v == "--" else float(v) for v in theirs[language.iso639_3]]
            np.testing.assert_allclose(row, values, rtol=0, atol=1e-6)
        print("shim ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shim ok" in done.stdout


def test_shim_is_not_installed_over_a_real_pkg_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    real = types.ModuleType("pkg_resources")
    monkeypatch.setitem(sys.modules, "pkg_resources", real)
    uriel._ensure_pkg_resources()
    assert sys.modules["pkg_resources"] is real
