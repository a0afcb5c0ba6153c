"""Labelled text examples, and the reader of local CSV/TSV/JSONL tables behind the dataset
plugins (a text column and a label column; see ``plugins/datasets.py``)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from merginguriel_core.errors import ConfigError

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
