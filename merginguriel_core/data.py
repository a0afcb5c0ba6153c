"""Labelled text examples from local files: SIB-200-style folders and generic tables.

A small reader used by data-dependent merge strategies (Fisher, RegMean): a folder laid out
like SIB-200 (``<flores_code>/{train,dev,test}.tsv`` with ``text`` and ``category``
columns), or one CSV/TSV/JSONL file with a text and a label column.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from merginguriel_core.errors import ConfigError
from merginguriel_core.languages import resolve_language

TEXT_COLUMNS = ("text", "utt", "sentence")
LABEL_COLUMNS = ("label", "category", "intent")


@dataclass(frozen=True)
class Examples:
    """Parallel lists of texts and label names, plus where they came from."""

    texts: list[str]
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def _pick(columns: list[str], wanted: tuple[str, ...], path: Path, what: str) -> str:
    for name in wanted:
        if name in columns:
            return name
    raise ConfigError(
        f"{path} has no {what} column; expected one of {', '.join(wanted)}, found {', '.join(columns) or 'none'}"
    )


def _read_rows(file: Path) -> tuple[list[dict], list[str]]:
    if not file.is_file():
        raise ConfigError(f"data file {file} does not exist")
    if file.suffix == ".jsonl":
        rows = []
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"{file} line {number} is not JSON: {exc.msg}") from None
        return rows, sorted({key for row in rows for key in row})
    if file.suffix in (".csv", ".tsv"):
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if file.suffix == ".tsv" else ",")
            return list(reader), list(reader.fieldnames or ())
    raise ConfigError(f"data file {file} must end in .csv, .tsv or .jsonl")


def read_table(path: str | Path) -> Examples:
    """Read a ``.csv``, ``.tsv`` or ``.jsonl`` file with a text and a label column."""
    file = Path(path)
    rows, columns = _read_rows(file)
    text, label = _pick(columns, TEXT_COLUMNS, file, "text"), _pick(columns, LABEL_COLUMNS, file, "label")
    examples = Examples([str(r[text]) for r in rows], [str(r[label]) for r in rows], str(file))
    if not examples.texts:
        raise ConfigError(f"data file {file} has no examples")
    return examples


def read_column(path: str | Path, column: str) -> list[str]:
    """One column of a table as strings, or ``[]`` when the table has no such column."""
    rows, columns = _read_rows(Path(path))
    return [str(r.get(column, "")) for r in rows] if column in columns else []


def sib200_split(data_dir: str | Path, locale: str, split: str = "train") -> Examples:
    """One language's split from a SIB-200-style folder (``<flores_code>/<split>.tsv``)."""
    language = resolve_language(locale)
    root = Path(data_dir)
    if not root.is_dir():
        raise ConfigError(f"--data-dir {root} is not a folder")
    if language.flores is None or not (root / language.flores).is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise ConfigError(
            f"--data-dir {root} has no folder for {language.locale} ({language.flores}); "
            f"found {', '.join(available[:8]) or 'none'}{' ...' if len(available) > 8 else ''}"
        )
    return read_table(root / language.flores / f"{split}.tsv")
