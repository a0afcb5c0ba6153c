"""Reading the built-in datasets: split names, label spaces, local folder scans and the hub.

The shared helpers of the ``sib200``, ``massive`` and ``table`` dataset plugins (was
``merginguriel_plugins.datasets``), public so a third-party dataset can reuse them.

Each dataset reads a local copy when ``--data-dir``/``--data-file`` is given and the Hugging
Face hub otherwise (``Davlan/sib200``, ``AmazonScience/massive``). A local folder is scanned
by name: a folder (or MASSIVE file) whose name is not a language code is skipped with a note,
never an error, and each language's folder is found by its canonical locale, whatever code
names the folder (``swa_Latn`` serves sw-KE). Two folders for one locale are an error only
when that locale is asked for.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

from merginguriel_core.data import Examples, Table
from merginguriel_core.errors import ConfigError, LanguageError, first_line
from merginguriel_core.languages import Language, resolve_language
from merginguriel_core.notes import note_once

SPLITS = ("train", "dev", "test")
SIB200_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
MASSIVE_INTENTS = (
    "alarm_query", "alarm_remove", "alarm_set", "audio_volume_down", "audio_volume_mute", "audio_volume_other",
    "audio_volume_up", "calendar_query", "calendar_remove", "calendar_set", "cooking_query", "cooking_recipe",
    "datetime_convert", "datetime_query", "email_addcontact", "email_query", "email_querycontact",
    "email_sendemail", "general_greet", "general_joke", "general_quirky", "iot_cleaning", "iot_coffee",
    "iot_hue_lightchange", "iot_hue_lightdim", "iot_hue_lightoff", "iot_hue_lighton", "iot_hue_lightup",
    "iot_wemo_off", "iot_wemo_on", "lists_createoradd", "lists_query", "lists_remove", "music_dislikeness",
    "music_likeness", "music_query", "music_settings", "news_query", "play_audiobook", "play_game", "play_music",
    "play_podcasts", "play_radio", "qa_currency", "qa_definition", "qa_factoid", "qa_maths", "qa_stock",
    "recommendation_events", "recommendation_locations", "recommendation_movies", "social_post", "social_query",
    "takeaway_order", "takeaway_query", "transport_query", "transport_taxi", "transport_ticket",
    "transport_traffic", "weather_query",
)
HUB_SPLIT = {"train": "train", "dev": "validation", "test": "test"}


def check_split(split: str) -> None:
    """A one-line error unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def non_empty(examples: Examples, what: str) -> Examples:
    """``examples``, or an error naming ``what`` when there are none."""
    if not len(examples):
        raise ConfigError(f"{what} is empty")
    return examples


def hub_split(hub_id: str, config: str, split: str):
    """One split from the hub (needs network; the error says so in one line)."""
    try:
        from datasets import load_dataset

        return load_dataset(hub_id, config, split=HUB_SPLIT[split])
    except Exception as exc:
        first = first_line(exc)
        raise ConfigError(
            f"cannot load {hub_id} ({config}, {split}) from the hub: {first}; give a local copy with --data-dir"
        ) from None


def data_folder(location: str) -> Path:
    """``--data-dir`` as a folder that exists."""
    root = Path(location)
    if not root.is_dir():
        raise ConfigError(f"--data-dir {root} is not a folder")
    return root


# ------------------------------------------------------------------------ SIB-200 folders
def is_language_folder(child: Path) -> bool:
    """A folder holding at least one split file (not a hidden one such as ``.git``)."""
    return child.is_dir() and not child.name.startswith(".") and any((child / f"{s}.tsv").is_file() for s in SPLITS)


def language_folders(root: Path) -> dict[str, list[str]]:
    """The SIB-200-style folders of ``root`` by canonical locale (names sorted).

    A folder whose name is not a language code is skipped with a note (once), so one stray
    folder never stops a command that does not ask for it.
    """
    found: dict[str, list[str]] = {}
    for child in sorted(root.iterdir()):
        if not is_language_folder(child):
            continue
        try:
            locale = resolve_language(child.name).locale
        except LanguageError as exc:
            note_once(f"skipped folder {child.name} of --data-dir {root}: not a language code ({exc})")
            continue
        found.setdefault(locale, []).append(child.name)
    return found


def language_of(name: str) -> str | None:
    """The canonical locale of a FLORES-style folder name's language part (``kas`` for
    ``kas_Deva``, ``apc`` for ``ajp_Arab``), or ``None``."""
    if len(name) != 8 or name[3] != "_":
        return None
    try:
        return resolve_language(name[:3]).locale
    except LanguageError:
        return None


def sib_folder(root: Path, language: Language, code: str) -> Path:
    """The folder of ``language`` in ``root``, found through the scan.

    A bare ISO code without a FLORES code of its own (``kas``, ``apc``) also finds a folder
    of its language in any script (``kas_Deva``), if there is exactly one.

    Raises:
        LanguageError: two folders fit and the code does not name one of them.
        ConfigError: no folder fits.
    """
    folders = language_folders(root)
    names = folders.get(language.locale, [])
    by_language = not names and language.flores is None
    if by_language:
        names = sorted(name for found in folders.values() for name in found if language_of(name) == language.locale)
    exact = [name for name in names if name.lower() == code.strip().lower()]
    if len(names) == 1 or exact:
        return root / (exact or names)[0]
    if names:
        hint = (f"name one by its FLORES-200 code ({' or '.join(names)})" if by_language
                else "keep only one of them in --data-dir")
        raise LanguageError(
            f"--data-dir {root} has {len(names)} folders for {language.locale} ({language.name}): "
            f"{', '.join(names)}; {hint}"
        )
    raise ConfigError(f"--data-dir {root} has no data for {language.locale}; it has {', '.join(sorted(folders)) or 'none'}")


# ------------------------------------------------------------------------- MASSIVE files
def massive_files(root: Path) -> dict[str, list[Path]]:
    """The ``*.jsonl`` files of ``root`` by canonical locale; a file whose name is not a
    language code is skipped with a note (once)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*.jsonl")):
        try:
            locale = resolve_language(path.stem).locale
        except LanguageError as exc:
            note_once(f"skipped file {path.name} of --data-dir {root}: not a language code ({exc})")
            continue
        found.setdefault(locale, []).append(path)
    return found


@lru_cache(maxsize=8)
def massive_split(path: str, split: str) -> Examples:
    """The records of one ``partition`` of a MASSIVE ``.jsonl`` file (cached per file and split)."""
    texts, labels = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                partition, intent, utt = row["partition"], row["intent"], row["utt"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise ConfigError(f"{path} line {number}: not a MASSIVE record ({exc})") from None
            if partition == split:
                if intent not in MASSIVE_INTENTS:
                    raise ConfigError(f"{path} line {number}: unknown intent {intent!r}")
                texts.append(utt)
                labels.append(intent)
    return Examples(texts, labels, f"{path}:{split}")


# --------------------------------------------------------------------------- local tables
def row_locales(table: Table) -> list[str | None] | None:
    """Each row's canonical locale, or ``None`` for the whole table when it has no locale
    column. A row whose locale cell is empty or not a language code gets ``None`` and is
    left out, with one note per such value."""
    cells = table.columns.get("locale")
    if cells is None:
        return None
    source = table.examples.source
    resolved: dict[str, str | None] = {}
    for code, count in sorted(Counter(cells).items()):
        if not code.strip():
            note_once(f"skipped {count} row(s) of {source} with an empty locale cell")
            resolved[code] = None
            continue
        try:
            resolved[code] = resolve_language(code).locale
        except LanguageError as exc:
            note_once(f"skipped {count} row(s) of {source} whose locale {code!r} is not a language code ({exc})")
            resolved[code] = None
    return [resolved[code] for code in cells]

