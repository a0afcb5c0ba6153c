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
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache

from merginguriel_core.errors import LanguageError


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


@cache
def _other_language(key: str) -> Language | None:
    """A language outside the MASSIVE table, named by its ISO 639-3 or FLORES-200 code.

    Its canonical locale is the ISO 639-3 code, so ``yor`` and ``yor_Latn`` are one
    language; a FLORES code also records its script. Names come from ISO 639 (iso639-lang).
    """
    from iso639 import Lang
    from iso639.exceptions import InvalidLanguageValue

    match = _FLORES.match(key)
    iso, script = (match.group(1), match.group(2)) if match else (key, None)
    if not re.fullmatch(r"[a-z]{3}", iso):
        return None
    try:
        language = Lang(iso)
    except InvalidLanguageValue:
        return None
    if language.pt3 != iso:  # e.g. a 639-2/B code: use the 639-3 spelling
        return None
    flores = f"{iso}_{script.capitalize()}" if script else None
    return Language(locale=iso, iso639_3=iso, flores=flores, name=language.name)


def known_codes() -> list[str]:
    """Return every accepted code in its usual spelling, sorted (locales, FLORES, ISO)."""
    return sorted(display for display, _ in _lookup().values())


def resolve_language(code: str) -> Language:
    """Return the :class:`Language` that ``code`` names.

    Accepts MASSIVE locales (case-insensitive, ``sw_KE`` works too), FLORES-200 codes
    (``swh_Latn``), ISO 639-3 codes (``swh`` or ``swa``) and ISO 639-1 codes (``sw``).
    All spellings of one language give the same object.

    Raises:
        LanguageError: ``code`` is not known; the message suggests close matches.
    """
    key = _normalise(code) if isinstance(code, str) else ""
    found = _lookup().get(key)
    if found is not None:
        return found[1]
    other = _other_language(key)
    if other is not None:
        return other
    table = _lookup()
    close = difflib.get_close_matches(key, list(table), n=4, cutoff=0.6)
    hint = f"; did you mean: {', '.join(table[match][0] for match in close)}?" if close else ""
    raise LanguageError(f"unknown language code {code!r}{hint} ({_ACCEPTED})")
