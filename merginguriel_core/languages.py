"""Language codes: one :class:`Language` per language, whatever code the user types.

MergingUriel meets three code systems: MASSIVE 1.1 locales (``sw-KE``), FLORES-200 codes as
used by SIB-200 folder names (``swh_Latn``) and ISO 639-3 codes (``swh``), which lang2vec
uses for URIEL vectors. The 52 MASSIVE languages are tabled here; any other language is
accepted by its ISO 639-3 code or FLORES-200 code (``yor``, ``yor_Latn``) and keyed by
its ISO 639-3 code. :func:`resolve_language` maps any of them (and ISO 639-1 codes such
as ``sw``) to the same :class:`Language`, whose ``locale`` is the canonical key used
everywhere else (similarity matrices, model registries, reports).

Macrolanguages: for Arabic, Azerbaijani, Persian, Latvian, Mongolian, Malay, Albanian,
Swahili and Chinese, lang2vec has a vector for both the macrolanguage code (``swa``) and
the individual-language code that FLORES uses (``swh``). ``Language.iso639_3`` is the code
whose URIEL vector we use, and it is the macrolanguage code, as in the seed project: only
with those vectors does the seed's weighting reproduce its published behaviour (see
``docs/similarity.md``). The individual codes are accepted as aliases.

Scripts: a FLORES-200 code of a MASSIVE language in another script than the table's
(``arb_Latn``, romanised Arabic) is a locale of its own, keyed by that FLORES code, with the
table row's URIEL vector. FLORES-200 also writes six other languages in two scripts
(``kas_Arab``/``kas_Deva`` ...) and, since ISO 639-3 merged ``ajp`` into ``apc``, has two
codes for Levantine Arabic (``ajp_Arab``, ``apc_Arab``); keyed by ISO code, each pair would be
one locale with two data folders, so each of these FLORES codes is a locale of its own too
(:data:`_OWN_LOCALE`). The bare ISO code (``kas``, ``apc``) still names the language.

Retired codes: ISO 639-3 retires codes every year. A retired code with a successor is read as
its successor (``ajp`` is ``apc``), with a note; one without a successor (a split) is a
:class:`LanguageError` naming the code and why it was retired.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from merginguriel_core.errors import LanguageError
from merginguriel_core.notes import note_once


@dataclass(frozen=True)
class Language:
    """One language, identified by its canonical ``locale`` key.

    Attributes:
        locale: the canonical key: the MASSIVE 1.1 locale where one exists (``"sw-KE"``),
            else the ISO 639-3 code (``"yor"``, also for ``yor_Latn``).
        iso639_3: the ISO 639-3 code whose URIEL vector lang2vec provides for it.
        flores: the FLORES-200 code used by SIB-200 folder names, or ``None``.
        name: the English name.
    """

    locale: str
    iso639_3: str
    flores: str | None
    name: str


# locale, URIEL (lang2vec) code, FLORES-200 code, English name, extra aliases.
# The ISO 639-1 code (the locale's language part) is always an alias too.
_TABLE: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("af-ZA", "afr", "afr_Latn", "Afrikaans", ()),
    ("am-ET", "amh", "amh_Ethi", "Amharic", ()),
    ("ar-SA", "ara", "arb_Arab", "Arabic", ("arb",)),
    ("az-AZ", "aze", "azj_Latn", "Azerbaijani", ("azj",)),
    ("bn-BD", "ben", "ben_Beng", "Bengali", ()),
    ("ca-ES", "cat", "cat_Latn", "Catalan", ()),
    ("cy-GB", "cym", "cym_Latn", "Welsh", ()),
    ("da-DK", "dan", "dan_Latn", "Danish", ()),
    ("de-DE", "deu", "deu_Latn", "German", ()),
    ("el-GR", "ell", "ell_Grek", "Greek", ()),
    ("en-US", "eng", "eng_Latn", "English", ()),
    ("es-ES", "spa", "spa_Latn", "Spanish", ()),
    ("fa-IR", "fas", "pes_Arab", "Persian", ("pes",)),
    ("fi-FI", "fin", "fin_Latn", "Finnish", ()),
    ("fr-FR", "fra", "fra_Latn", "French", ()),
    ("he-IL", "heb", "heb_Hebr", "Hebrew", ()),
    ("hi-IN", "hin", "hin_Deva", "Hindi", ()),
    ("hu-HU", "hun", "hun_Latn", "Hungarian", ()),
    ("hy-AM", "hye", "hye_Armn", "Armenian", ()),
    ("id-ID", "ind", "ind_Latn", "Indonesian", ()),
    ("is-IS", "isl", "isl_Latn", "Icelandic", ()),
    ("it-IT", "ita", "ita_Latn", "Italian", ()),
    ("ja-JP", "jpn", "jpn_Jpan", "Japanese", ()),
    ("jv-ID", "jav", "jav_Latn", "Javanese", ()),
    ("ka-GE", "kat", "kat_Geor", "Georgian", ()),
    ("km-KH", "khm", "khm_Khmr", "Khmer", ()),
    ("kn-IN", "kan", "kan_Knda", "Kannada", ()),
    ("ko-KR", "kor", "kor_Hang", "Korean", ()),
    ("lv-LV", "lav", "lvs_Latn", "Latvian", ("lvs",)),
    ("ml-IN", "mal", "mal_Mlym", "Malayalam", ()),
    ("mn-MN", "mon", "khk_Cyrl", "Mongolian", ("khk",)),
    ("ms-MY", "msa", "zsm_Latn", "Malay", ("zsm",)),
    ("my-MM", "mya", "mya_Mymr", "Burmese", ()),
    ("nb-NO", "nob", "nob_Latn", "Norwegian Bokmål", ("nor", "no")),
    ("nl-NL", "nld", "nld_Latn", "Dutch", ()),
    ("pl-PL", "pol", "pol_Latn", "Polish", ()),
    ("pt-PT", "por", "por_Latn", "Portuguese", ()),
    ("ro-RO", "ron", "ron_Latn", "Romanian", ()),
    ("ru-RU", "rus", "rus_Cyrl", "Russian", ()),
    ("sl-SL", "slv", "slv_Latn", "Slovenian", ()),
    ("sq-AL", "sqi", "als_Latn", "Albanian", ("als",)),
    ("sv-SE", "swe", "swe_Latn", "Swedish", ()),
    ("sw-KE", "swa", "swh_Latn", "Swahili", ("swh",)),
    ("ta-IN", "tam", "tam_Taml", "Tamil", ()),
    ("te-IN", "tel", "tel_Telu", "Telugu", ()),
    ("th-TH", "tha", "tha_Thai", "Thai", ()),
    ("tl-PH", "tgl", "tgl_Latn", "Tagalog", ()),
    ("tr-TR", "tur", "tur_Latn", "Turkish", ()),
    ("ur-PK", "urd", "urd_Arab", "Urdu", ()),
    ("vi-VN", "vie", "vie_Latn", "Vietnamese", ()),
    # Both Chinese locales share one URIEL vector; a bare "zh"/"zho"/"cmn" means zh-CN.
    ("zh-CN", "zho", "zho_Hans", "Chinese (Simplified)", ("cmn",)),
    ("zh-TW", "zho", "zho_Hant", "Chinese (Traditional)", ()),
)

LANGUAGES: tuple[Language, ...] = tuple(
    Language(locale=locale, iso639_3=iso, flores=flores, name=name)
    for locale, iso, flores, name, _ in _TABLE
)
MASSIVE_LOCALES: tuple[str, ...] = tuple(language.locale for language in LANGUAGES)

_ACCEPTED = "MASSIVE locales, FLORES-200 codes and ISO 639-3 codes are accepted"


def _normalise(code: str) -> str:
    """Return the lookup form of a code: stripped, lower case, ``_`` read as ``-``."""
    return code.strip().lower().replace("_", "-")


@cache
def _lookup() -> dict[str, tuple[str, Language]]:
    """Map each accepted code's lookup form to (its display spelling, its Language).

    Earlier table rows win, so a code shared by two rows (``zho``) names the first (zh-CN).
    """
    table: dict[str, tuple[str, Language]] = {}
    for language, (_, _, _, _, aliases) in zip(LANGUAGES, _TABLE, strict=True):
        iso639_1 = language.locale.split("-")[0]
        codes = (language.locale, language.flores, language.iso639_3, iso639_1, *aliases)
        for code in codes:
            if code is not None:
                table.setdefault(_normalise(code), (code, language))
    return table


_FLORES = re.compile(r"^([a-z]{3})-([a-z]{4})$")

#: ISO 15924 script codes: the scripts of Unicode 17 and the codes used only in tags (Hans,
#: Hant, Jpan, Latf ...). The second part of a FLORES-style code must be one, so a folder named
#: ``old_runs`` is not read as Mochi (``old``) in a script "Runs".
_SCRIPTS = frozenset(
    (
        "Adlm Aghb Ahom Arab Aran Armi Armn Avst Bali Bamu Bass Batk Beng Berf Bhks Blis Bopo Brah Brai "
        "Bugi Buhd Cakm Cans Cari Cham Cher Chrs Cirt Copt Cpmn Cprt Cyrl Cyrs Deva Diak Dogr Dsrt Dupl "
        "Egyd Egyh Egyp Elba Elym Ethi Gara Geok Geor Glag Gong Gonm Goth Gran Grek Gujr Gukh Guru Hanb "
        "Hang Hani Hano Hans Hant Hatr Hebr Hira Hluw Hmng Hmnp Hrkt Hung Inds Ital Java Jpan Jurc Kali "
        "Kana Kawi Khar Khmr Khoj Kitl Kits Knda Kore Kpel Krai Kthi Lana Laoo Latf Latg Latn Leke Lepc "
        "Limb Lina Linb Lisu Loma Lyci Lydi Mahj Maka Mand Mani Marc Maya Medf Mend Merc Mero Mlym Modi "
        "Mong Moon Mroo Mtei Mult Mymr Nagm Nand Narb Nbat Newa Nkdb Nkgb Nkoo Nshu Ogam Olck Onao Orkh "
        "Orya Osge Osma Ougr Palm Pauc Pcun Perm Phag Phli Phlp Phlv Phnx Piqd Plrd Prti Qaaa Qabx Rjng "
        "Rohg Roro Runr Samr Sara Sarb Saur Seal Sgnw Shaw Shrd Shui Sidd Sidt Sind Sinh Sogd Sogo Sora "
        "Soyo Sund Sunu Sylo Syrc Syre Syrj Syrn Tagb Takr Tale Talu Taml Tang Tavt Tayo Telu Teng Tfng "
        "Tglg Thaa Thai Tibt Tirh Tnsa Todr Tols Toto Tutg Ugar Vaii Visp Vith Wara Wcho Wole Xpeo Xsux "
        "Yezi Yiii Zanb Zinh Zmth Zsye Zsym Zxxx Zyyy Zzzz"
    ).lower().split()
)

#: FLORES-200 codes that are locales of their own: FLORES code -> (URIEL code, name). Without
#: this, ``kas_Arab`` and ``kas_Deva`` (or ``ajp_Arab`` and ``apc_Arab``, one ISO 639-3 language
#: since 2023) would be one locale, and a SIB-200 folder of either would hide the other.
_OWN_LOCALE: dict[str, tuple[str, str]] = {
    "ace_Arab": ("ace", "Acehnese (Arabic script)"),
    "ace_Latn": ("ace", "Acehnese (Latin script)"),
    "arb_Latn": ("ara", "Arabic (Latin script)"),  # the URIEL code of ar-SA, whose script is Arab
    "bjn_Arab": ("bjn", "Banjar (Arabic script)"),
    "bjn_Latn": ("bjn", "Banjar (Latin script)"),
    "kas_Arab": ("kas", "Kashmiri (Arabic script)"),
    "kas_Deva": ("kas", "Kashmiri (Devanagari script)"),
    "knc_Arab": ("knc", "Central Kanuri (Arabic script)"),
    "knc_Latn": ("knc", "Central Kanuri (Latin script)"),
    "min_Arab": ("min", "Minangkabau (Arabic script)"),
    "min_Latn": ("min", "Minangkabau (Latin script)"),
    "taq_Latn": ("taq", "Tamasheq (Latin script)"),
    "taq_Tfng": ("taq", "Tamasheq (Tifinagh script)"),
    # ISO 639-3 merged ajp (South Levantine) into apc (now "Levantine Arabic") in 2023, but
    # URIEL (lang2vec 1.1.2) predates that: its apc row is North Levantine Arabic and it has a
    # row of its own for ajp (other geography, 9 of 103 syntax_knn values differ). So ajp_Arab,
    # South Levantine data, is looked up by ajp; a bare "ajp" is read as apc, its successor.
    # Every other retired code takes its successor's vector: a locale must name one vector
    # whatever code spells it, and lang2vec 1.1.2 has no retired code whose successor lacks a
    # vector (of the 211 retired with a successor, 75 have a vector of their own, all 211 a
    # successor's vector).
    "ajp_Arab": ("ajp", "South Levantine Arabic"),
    "apc_Arab": ("apc", "North Levantine Arabic"),
}

_SCRIPT_NAMES = {"arab": "Arabic", "cyrl": "Cyrillic", "deva": "Devanagari", "latn": "Latin"}
_RETIRED_BECAUSE = {"C": "changed", "D": "a duplicate", "M": "merged", "N": "non-existent", "S": "split"}


@cache
def _own_locales() -> dict[str, Language]:
    """The :data:`_OWN_LOCALE` languages by the lookup form of their FLORES code."""
    return {
        _normalise(flores): Language(locale=flores, iso639_3=uriel, flores=flores, name=name)
        for flores, (uriel, name) in _OWN_LOCALE.items()
    }


def _retired_error(given: str, retired) -> LanguageError:
    """The error for a code ISO 639-3 retired without a successor (e.g. split in two)."""
    why = _RETIRED_BECAUSE.get(retired.reason, "retired")
    remedy = " ".join(str(retired.ret_remedy or "").split())
    return LanguageError(
        f"language code {given!r}: ISO 639-3 retired {retired.id} ({retired.name}) on {retired.effective} "
        f"({why}) without a successor{f': {remedy}' if remedy else ''}; name the language by a current "
        f"ISO 639-3 or FLORES-200 code"
    )


@dataclass(frozen=True)
class _Current:
    """A code read in today's ISO 639-3: the code, its English name, and the retired code
    it was given as (``None`` if the code given is current)."""

    code: str
    name: str
    retired: Any = None  # iso639's DeprecatedLanguageValue for the code given

    def note(self, reading: str) -> str | None:
        """The note about a retired code (``None`` for a current one); ``reading`` says how it is read."""
        if self.retired is None:
            return None
        return (f"{self.retired.id} ({self.retired.name}) was retired from ISO 639-3 on "
                f"{self.retired.effective}; {reading}")


def _current_code(iso: str, given: str) -> _Current | None:
    """Read ``iso`` in today's ISO 639-3, or ``None`` if it is no ISO 639-3 code.

    A retired code becomes its successor (following a chain of retirements); no iso639
    exception leaves this function.

    Raises:
        LanguageError: the code was retired without a successor.
    """
    from iso639 import Lang
    from iso639.exceptions import DeprecatedLanguageValue, InvalidLanguageValue

    code, first = iso, None
    for _ in range(8):  # retirement chains are short; the bound guards against a cycle
        try:
            language = Lang(code)
        except InvalidLanguageValue:
            return None
        except DeprecatedLanguageValue as retired:
            if not retired.change_to:
                raise _retired_error(given, retired) from None
            first = first or retired
            code = str(retired.change_to)
            continue
        if language.pt3 != code:  # e.g. a 639-2/B code: use the 639-3 spelling
            return None
        return _Current(code, language.name, first)
    return None


def _script_variant(language: Language, script: str, flores: str) -> Language:
    """A MASSIVE language written as ``flores``: its own row if the script matches one
    (``cmn_Hant`` is zh-TW), else a locale of its own keyed by the FLORES code."""
    for row in LANGUAGES:
        if row.iso639_3 == language.iso639_3 and row.flores and row.flores[4:].lower() == script:
            return row
    written = _SCRIPT_NAMES.get(script, script.capitalize())
    return Language(locale=flores, iso639_3=language.iso639_3, flores=flores, name=f"{language.name} ({written} script)")


@cache
def _other_language(key: str) -> tuple[Language, str | None] | None:
    """A language outside the MASSIVE table, named by its ISO 639-3 or FLORES-200 code, and
    the note to give about the code (a retired one), or ``None`` for an unknown code.

    Its canonical locale is the ISO 639-3 code, so ``yor`` and ``yor_Latn`` are one
    language; a FLORES code also records its script. The FLORES codes of :data:`_OWN_LOCALE`,
    and those of a MASSIVE language in another script, are locales of their own. Names come
    from ISO 639 (iso639-lang).

    Raises:
        LanguageError: a code ISO 639-3 retired without a successor.
    """
    match = _FLORES.match(key)
    iso, script = (match.group(1), match.group(2)) if match else (key, None)
    if not re.fullmatch(r"[a-z]{3}", iso) or (script is not None and script not in _SCRIPTS):
        return None
    flores = f"{iso}_{script.capitalize()}" if script else None
    current = _current_code(iso, flores or iso)
    own = _own_locales().get(key)
    if own is not None:  # ajp_Arab: retired, yet kept apart from its successor's apc_Arab
        if current is None:
            return own, None
        return own, current.note(f"merged into {current.code}, but {own.locale} stays a locale of its own "
                                 f"({own.name}, URIEL vector {own.iso639_3})")
    if current is None:
        return None
    note = current.note(f"read as its successor {current.code}")
    massive = _lookup().get(current.code)
    if massive is not None:  # a MASSIVE language in another script, or a code merged into one
        language = massive[1]
        return (_script_variant(language, script, flores) if script and flores else language), note
    return Language(locale=current.code, iso639_3=current.code, flores=flores, name=current.name), note


def known_codes() -> list[str]:
    """Return every accepted code in its usual spelling, sorted (locales, FLORES, ISO)."""
    return sorted(display for display, _ in _lookup().values())


def resolve_language(code: str) -> Language:
    """Return the :class:`Language` that ``code`` names.

    Accepts MASSIVE locales (case-insensitive, ``sw_KE`` works too), FLORES-200 codes
    (``swh_Latn``), ISO 639-3 codes (``swh`` or ``swa``) and ISO 639-1 codes (``sw``).
    All spellings of one language give the same object.

    A code ISO 639-3 has retired is read as its successor, with a note (once per code).

    Raises:
        LanguageError: ``code`` is not known (the message suggests close matches), or was
            retired from ISO 639-3 without a successor.
    """
    key = _normalise(code) if isinstance(code, str) else ""
    found = _lookup().get(key)
    if found is not None:
        return found[1]
    other = _other_language(key)
    if other is not None:
        language, note = other
        if note is not None:
            note_once(note)
        return language
    table = _lookup()
    close = difflib.get_close_matches(key, list(table), n=4, cutoff=0.6)
    hint = f"; did you mean: {', '.join(table[match][0] for match in close)}?" if close else ""
    match = _FLORES.match(key)
    if match and match.group(2) not in _SCRIPTS:
        hint = f" ({match.group(2).capitalize()!r} is not an ISO 15924 script code such as Latn){hint}"
    raise LanguageError(f"unknown language code {code!r}{hint} ({_ACCEPTED})")
