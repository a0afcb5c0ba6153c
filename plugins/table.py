"""Built-in dataset ``table``: one local CSV/TSV/JSONL file with text and label columns.

A table's labels are only a set (sorted for training), and a model is evaluated on it in its
own ``id2label`` order."""

from __future__ import annotations

from pathlib import Path

from merginguriel_core import hookimpl
from merginguriel_core.data import Examples, Table, read_labelled
from merginguriel_core.dataset_files import check_split, non_empty, row_locales
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Dataset
from merginguriel_core.languages import resolve_language


class LocalTable(Dataset):
    name = "table"
    description = "One local CSV/TSV/JSONL file (--data-file) with text and label columns, optional locale and split columns."
    #: A table's labels are only the set its rows use: models are trained in sorted order and
    #: evaluated in their own id2label order (a model trained on SIB-200 reads a CSV export).
    fixed_label_order = False

    def labels(self, location: str | None) -> list[str]:
        """The distinct labels, sorted: the id order of a model trained on this table."""
        return sorted(set(self._table(location).examples.labels))

    def locales(self, location: str | None) -> list[str]:
        table = self._table(location)
        return sorted({locale for locale in row_locales(table) or () if locale is not None})

    def load(self, location: str | None, locale: str, split: str) -> Examples:
        check_split(split)
        table = self._table(location)
        rows = table.examples
        locales, splits = row_locales(table), table.columns.get("split")
        wanted = resolve_language(locale).locale
        keep = [
            i for i in range(len(rows))
            if (locales is None or locales[i] == wanted) and (splits is None or splits[i].strip() == split)
        ]
        return non_empty(Examples([rows.texts[i] for i in keep], [rows.labels[i] for i in keep], rows.source),
                         f"{location} rows for {wanted} {split}")

    def _table(self, location: str | None) -> Table:
        if location is None or not Path(location).is_file():
            raise ConfigError("dataset 'table' needs --data-file FILE (.csv, .tsv or .jsonl)")
        return read_labelled(location)


@hookimpl
def register_datasets(register):
    register(LocalTable())
