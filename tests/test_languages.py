"""Tests for merginguriel_core.languages: code tables and resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from merginguriel_core.errors import LanguageError
from merginguriel_core.languages import (
    LANGUAGES,
    MASSIVE_LOCALES,
    Language,
    known_codes,
    resolve_language,
)

SIB200 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sib200"
SIB200_CODES = (
    "afr_Latn als_Latn amh_Ethi arb_Arab azj_Latn ben_Beng cat_Latn cym_Latn dan_Latn "
    "deu_Latn ell_Grek eng_Latn fin_Latn fra_Latn heb_Hebr hin_Deva hun_Latn hye_Armn "
    "ind_Latn isl_Latn ita_Latn jav_Latn jpn_Jpan kan_Knda kat_Geor khk_Cyrl khm_Khmr "
    "kor_Hang lvs_Latn mal_Mlym mya_Mymr nld_Latn nob_Latn pes_Arab pol_Latn por_Latn "
    "ron_Latn rus_Cyrl slv_Latn spa_Latn swe_Latn swh_Latn tam_Taml tel_Telu tgl_Latn "
    "tha_Thai tur_Latn urd_Arab vie_Latn zho_Hans zho_Hant zsm_Latn"
).split()


def test_massive_locales_are_the_52_of_massive_1_1() -> None:
    assert len(MASSIVE_LOCALES) == 52
    assert len(set(MASSIVE_LOCALES)) == 52
    assert MASSIVE_LOCALES[0] == "af-ZA" and MASSIVE_LOCALES[-1] == "zh-TW"
    assert {"ca-ES", "sl-SL", "he-IL", "sv-SE", "nb-NO"} <= set(MASSIVE_LOCALES)
    assert list(MASSIVE_LOCALES) == sorted(MASSIVE_LOCALES)


@pytest.mark.parametrize("locale", MASSIVE_LOCALES)
def test_every_massive_locale_resolves_to_itself(locale: str) -> None:
    language = resolve_language(locale)
    assert language.locale == locale
    assert resolve_language(locale.lower().replace("-", "_")) is language


def test_flores_codes_cover_exactly_the_sib200_subset() -> None:
    assert sorted(language.flores for language in LANGUAGES) == sorted(SIB200_CODES)


@pytest.mark.skipif(not SIB200.is_dir(), reason="../shared/data/sib200 is not present")
def test_flores_codes_match_sib200_folder_names() -> None:
    folders = sorted(entry.name for entry in SIB200.iterdir() if entry.is_dir())
    assert folders == sorted(SIB200_CODES)


@pytest.mark.parametrize("flores", SIB200_CODES)
def test_every_flores_code_resolves_back_to_itself(flores: str) -> None:
    assert resolve_language(flores).flores == flores


@pytest.mark.parametrize(
    ("spellings", "locale"),
    [
        (["sw-KE", "sw_ke", "SW-KE", "swh_Latn", "swh", "swa", "sw", " sw-KE "], "sw-KE"),
        (["ar-SA", "arb_Arab", "arb", "ara", "ar"], "ar-SA"),
        (["fa-IR", "pes_Arab", "pes", "fas", "fa"], "fa-IR"),
        (["nb-NO", "nob_Latn", "nob", "nor", "no", "nb"], "nb-NO"),
        (["mn-MN", "khk_Cyrl", "khk", "mon", "mn"], "mn-MN"),
        (["zh-CN", "zho_Hans", "zho", "cmn", "zh"], "zh-CN"),
        (["zh-TW", "zho_Hant", "zh_tw"], "zh-TW"),
    ],
)
def test_all_spellings_of_a_language_give_the_same_language(
    spellings: list[str], locale: str
) -> None:
    languages = {resolve_language(code) for code in spellings}
    assert len(languages) == 1
    assert languages.pop().locale == locale


def test_language_fields() -> None:
    assert resolve_language("sw") == Language(
        locale="sw-KE", iso639_3="swa", flores="swh_Latn", name="Swahili"
    )
    assert resolve_language("de").iso639_3 == "deu"


def test_both_chinese_locales_share_one_uriel_code() -> None:
    simplified, traditional = resolve_language("zh-CN"), resolve_language("zh-TW")
    assert simplified != traditional
    assert simplified.iso639_3 == traditional.iso639_3 == "zho"
    assert (simplified.flores, traditional.flores) == ("zho_Hans", "zho_Hant")


def test_unknown_code_suggests_close_matches() -> None:
    with pytest.raises(LanguageError) as caught:
        resolve_language("sw-KN")
    message = str(caught.value)
    assert "'sw-KN'" in message
    assert "did you mean: sw-KE" in message
    assert "MASSIVE locales, FLORES-200 codes and ISO 639-3 codes are accepted" in message
    assert "\n" not in message


def test_unknown_flores_code_suggests_the_flores_spelling() -> None:
    with pytest.raises(LanguageError, match=r"did you mean: .*swh_Latn"):
        resolve_language("swh_Lat")


def test_unknown_code_without_close_match_has_no_suggestion() -> None:
    with pytest.raises(LanguageError) as caught:
        resolve_language("qqqqqqqq")
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize("bad", ["", "   ", "xx-YY"])
def test_empty_and_unknown_codes_raise(bad: str) -> None:
    with pytest.raises(LanguageError, match="unknown language code"):
        resolve_language(bad)


def test_known_codes_lists_every_spelling_once() -> None:
    codes = known_codes()
    assert codes == sorted(codes)
    assert len(codes) == len(set(codes))
    assert {"sw-KE", "swh_Latn", "swh", "swa", "sw", "zho_Hant"} <= set(codes)
    for code in codes:
        resolve_language(code)
