"""Built-in dataset ``sib200``: SIB-200 topic classification, from a local copy or the hub.

A local copy is one folder per language (``<flores>/{train,dev,test}.tsv``), found by
canonical locale (see :mod:`merginguriel_core.dataset_files`)."""

from __future__ import annotations

from pathlib import Path

from merginguriel_core import hookimpl
from merginguriel_core.data import Examples, read_table
from merginguriel_core.dataset_files import (
    SIB200_LABELS, SPLITS, check_split, data_folder, hub_split, language_folders, non_empty, sib_folder,
)
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Dataset
from merginguriel_core.languages import MASSIVE_LOCALES, resolve_language


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
        return sorted(language_folders(data_folder(location)))

    def load(self, location: str | None, locale: str, split: str) -> Examples:
        check_split(split)
        language = resolve_language(locale)
        if location is None:
            flores = language.flores
            if flores is None:
                raise ConfigError(f"{language.locale} has no FLORES-200 code; name it by one, e.g. yor_Latn")
            rows = hub_split(self.hub_id, flores, split)
            return non_empty(Examples(list(rows["text"]), list(rows["category"]), f"{self.hub_id}/{flores}/{split}"),
                             f"{self.hub_id} {flores} {split}")
        root = data_folder(location)
        path = sib_folder(root, language, locale) / f"{split}.tsv"
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; splits are {', '.join(SPLITS)}")
        return non_empty(read_table(path), str(path))


@hookimpl
def register_datasets(register):
    register(Sib200())
