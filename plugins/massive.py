"""Built-in dataset ``massive``: MASSIVE 1.1 intent classification, from ``<locale>.jsonl`` files
or the hub."""

from __future__ import annotations

from merginguriel_core import hookimpl
from merginguriel_core.data import Examples
from merginguriel_core.dataset_files import (
    MASSIVE_INTENTS, check_split, data_folder, hub_split, massive_files, massive_split, non_empty,
)
from merginguriel_core.errors import ConfigError, LanguageError
from merginguriel_core.interfaces import Dataset
from merginguriel_core.languages import MASSIVE_LOCALES, resolve_language


class Massive(Dataset):
    name = "massive"
    description = "MASSIVE 1.1 intent classification (60 intents, 52 locales): <locale>.jsonl files or AmazonScience/massive."
    hub_id = "AmazonScience/massive"

    def labels(self, location: str | None) -> list[str]:
        return list(MASSIVE_INTENTS)

    def locales(self, location: str | None) -> list[str]:
        if location is None:
            return list(MASSIVE_LOCALES)
        return sorted(massive_files(data_folder(location)))

    def load(self, location: str | None, locale: str, split: str) -> Examples:
        check_split(split)
        language = resolve_language(locale)
        if language.locale not in MASSIVE_LOCALES:
            raise ConfigError(f"MASSIVE has no {language.locale}; it has {', '.join(MASSIVE_LOCALES)}")
        if location is None:
            rows = hub_split(self.hub_id, language.locale, split)
            names = rows.features["intent"].names
            return non_empty(Examples(list(rows["utt"]), [names[i] for i in rows["intent"]],
                                      f"{self.hub_id}/{language.locale}/{split}"), f"{self.hub_id} {language.locale} {split}")
        root = data_folder(location)
        files = massive_files(root)
        paths = files.get(language.locale, [])
        if len(paths) > 1:
            raise LanguageError(f"--data-dir {root} has {len(paths)} files for {language.locale}: "
                                f"{', '.join(p.name for p in paths)}; keep only one of them there")
        if not paths:
            raise ConfigError(f"{root / (language.locale + '.jsonl')} does not exist; --data-dir has "
                              f"{', '.join(sorted(files)) or 'no locales'}")
        path = paths[0]
        return non_empty(massive_split(str(path), split), f"{path} partition {split}")


@hookimpl
def register_datasets(register):
    register(Massive())
