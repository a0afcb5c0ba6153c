"""Built-in datasets: SIB-200 topics, MASSIVE intents, and any local CSV/TSV/JSONL table.

Each reads a local copy when ``--data-dir``/``--data-file`` is given and the Hugging Face
hub otherwise (``Davlan/sib200``, ``AmazonScience/massive``). Labels have one fixed order per
dataset, so models fine-tuned on different languages share their ``id2label``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from merginguriel_core import hookimpl
from merginguriel_core.data import Examples, read_table
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Dataset
from merginguriel_core.languages import MASSIVE_LOCALES, resolve_language

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
_HUB_SPLIT = {"train": "train", "dev": "validation", "test": "test"}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def _non_empty(examples: Examples, what: str) -> Examples:
    if not len(examples):
        raise ConfigError(f"{what} is empty")
    return examples


def _hub_split(hub_id: str, config: str, split: str):
    """One split from the hub (needs network; the error says so in one line)."""
    try:
        from datasets import load_dataset

        return load_dataset(hub_id, config, split=_HUB_SPLIT[split])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot load {hub_id} ({config}, {split}) from the hub: {first}; give a local copy with --data-dir"
        ) from None


class Sib200(Dataset):
    name = "sib200"
    description = "SIB-200 topic classification (7 labels, FLORES-200 sentences): <flores>/{train,dev,test}.tsv or Davlan/sib200."
    hub_id = "Davlan/sib200"

    def labels(self, location: str | None) -> list[str]:
        if location is not None and (Path(location) / "labels.txt").is_file():
            listed = [l.strip() for l in (Path(location) / "labels.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
            if sorted(listed) != sorted(SIB200_LABELS):
                raise ConfigError(f"{location}/labels.txt lists {', '.join(listed)}; expected the 7 SIB-200 topics")
        return list(SIB200_LABELS)

    def locales(self, location: str | None) -> list[str]:
        if location is None:
            return list(MASSIVE_LOCALES)
        root = _folder(location)
        found = []
        for child in sorted(root.iterdir()):
            if child.is_dir() and (child / "test.tsv").is_file():
                try:
                    found.append(resolve_language(child.name).locale)
                except ConfigError:
                    continue
        return found

    def load(self, location: str | None, locale: str, split: str) -> Examples:
        _check_split(split)
        language = resolve_language(locale)
        flores = language.flores
        if location is None:
            if flores is None:
                raise ConfigError(f"{language.locale} has no FLORES-200 code; name it as e.g. yor_Latn")
            rows = _hub_split(self.hub_id, flores, split)
            return _non_empty(Examples(list(rows["text"]), list(rows["category"]), f"{self.hub_id}/{flores}/{split}"),
                              f"{self.hub_id} {flores} {split}")
        root = _folder(location)
        folder = root / flores if flores else None
        if folder is None or not folder.is_dir():
            candidates = sorted(root.glob(f"{language.iso639_3}_*"))
            folder = candidates[0] if len(candidates) == 1 else None
        if folder is None:
            raise ConfigError(
                f"--data-dir {root} has no data for {language.locale}; it has {', '.join(self.locales(location)) or 'none'}"
            )
        path = folder / f"{split}.tsv"
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; splits are {', '.join(SPLITS)}")
        return _non_empty(read_table(path), str(path))


class Massive(Dataset):
    name = "massive"
    description = "MASSIVE 1.1 intent classification (60 intents, 52 locales): <locale>.jsonl files or AmazonScience/massive."
    hub_id = "AmazonScience/massive"

    def labels(self, location: str | None) -> list[str]:
        return list(MASSIVE_INTENTS)

    def locales(self, location: str | None) -> list[str]:
        if location is None:
            return list(MASSIVE_LOCALES)
        return sorted(resolve_language(p.stem).locale for p in _folder(location).glob("*.jsonl"))

    def load(self, location: str | None, locale: str, split: str) -> Examples:
        _check_split(split)
        language = resolve_language(locale)
        if language.locale not in MASSIVE_LOCALES:
            raise ConfigError(f"MASSIVE has no {language.locale}; it has {', '.join(MASSIVE_LOCALES)}")
        if location is None:
            rows = _hub_split(self.hub_id, language.locale, split)
            names = rows.features["intent"].names
            return _non_empty(Examples(list(rows["utt"]), [names[i] for i in rows["intent"]],
                                       f"{self.hub_id}/{language.locale}/{split}"), f"{self.hub_id} {language.locale} {split}")
        path = _folder(location) / f"{language.locale}.jsonl"
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; --data-dir has {', '.join(self.locales(location)) or 'no locales'}")
        return _non_empty(_massive_split(str(path), split), f"{path} partition {split}")


@lru_cache(maxsize=8)
def _massive_split(path: str, split: str) -> Examples:
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


class LocalTable(Dataset):
    name = "table"
    description = "One local CSV/TSV/JSONL file (--data-file) with text and label columns, optional locale and split columns."

    def labels(self, location: str | None) -> list[str]:
        return sorted(set(self._rows(location).labels))

    def locales(self, location: str | None) -> list[str]:
        locales = {resolve_language(code).locale for code in self._column(location, "locale") if code}
        return sorted(locales)

    def load(self, location: str | None, locale: str, split: str) -> Examples:
        _check_split(split)
        rows = self._rows(location)
        locales, splits = self._column(location, "locale"), self._column(location, "split")
        wanted = resolve_language(locale).locale
        keep = [
            i for i in range(len(rows))
            if (not locales or resolve_language(locales[i]).locale == wanted) and (not splits or splits[i] == split)
        ]
        return _non_empty(Examples([rows.texts[i] for i in keep], [rows.labels[i] for i in keep], rows.source),
                          f"{location} rows for {wanted} {split}")

    def _rows(self, location: str | None) -> Examples:
        if location is None or not Path(location).is_file():
            raise ConfigError("dataset 'table' needs --data-file FILE (.csv, .tsv or .jsonl)")
        return read_table(location)

    def _column(self, location: str | None, column: str) -> list[str]:
        from merginguriel_core.data import read_column

        return read_column(location, column)


def _folder(location: str) -> Path:
    root = Path(location)
    if not root.is_dir():
        raise ConfigError(f"--data-dir {root} is not a folder")
    return root


@hookimpl
def register_datasets(register):
    register(Sib200())
    register(Massive())
    register(LocalTable())
