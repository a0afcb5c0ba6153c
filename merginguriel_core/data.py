"""Labelled text examples, and the reader of local CSV/TSV/JSONL tables behind the dataset
plugins (a text column and a label column; see ``plugins/table.py`` and
:mod:`merginguriel_core.dataset_files`).

A file that cannot be read as a table is a one-line :class:`ConfigError` naming the file, the
line and what was expected: bytes that are not UTF-8, a JSONL line that is not a JSON object,
a row without its text or label, a CSV row with more cells than the header.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from merginguriel_core.errors import ConfigError

TEXT_COLUMNS = ("text", "utt", "sentence")
LABEL_COLUMNS = ("label", "category", "intent")
_EVERY_ROW = (
    f"every row needs a text field ({', '.join(TEXT_COLUMNS[:-1])} or {TEXT_COLUMNS[-1]}) and a label field "
    f"({', '.join(LABEL_COLUMNS[:-1])} or {LABEL_COLUMNS[-1]})"
)
_JSON_KINDS = {list: "an array", str: "a string", bool: "true or false", int: "a number", float: "a number",
               type(None): "null"}


@dataclass(frozen=True)
class Examples:
    """Parallel lists of texts and label names, plus where they came from."""

    texts: list[str]
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Table:
    """A labelled table: its examples, and per row its line in the file and the cells of its
    other columns (``""`` where a row has none), e.g. ``columns["locale"]``."""

    examples: Examples
    lines: list[int]
    columns: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Rows:
    """The raw rows of a file: ``(line, {column: value})``, the columns, and whether the values
    come from JSON (fields) or from a CSV/TSV (cells)."""

    file: Path
    rows: list[tuple[int, dict[str, object]]]
    columns: list[str]
    json: bool


def _pick(columns: list[str], wanted: tuple[str, ...], path: Path, what: str) -> str:
    for name in wanted:
        if name in columns:
            return name
    raise ConfigError(
        f"{path} has no {what} column; expected one of {', '.join(wanted)}, found {', '.join(columns) or 'none'}"
    )


def _decode(file: Path) -> str:
    """The text of ``file``, which must be UTF-8 (a leading byte-order mark is dropped)."""
    data = file.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{file} is not UTF-8: byte 0x{data[exc.start]:02x} on line {line} cannot be decoded; save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _jsonl_rows(file: Path, text: str) -> _Rows:
    rows: list[tuple[int, dict[str, object]]] = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file} line {number} is not JSON: {exc.msg}; every line must be one JSON object") from None
        if not isinstance(row, dict):
            kind = _JSON_KINDS.get(type(row), type(row).__name__)
            raise ConfigError(
                f"{file} line {number} is {kind}, not a JSON object; every line must be one object such as "
                f'{{"text": "...", "label": "..."}}'
            )
        rows.append((number, row))
    return _Rows(file, rows, sorted({key for _, row in rows for key in row}), json=True)


def _delimited_rows(file: Path, text: str) -> _Rows:
    delimiter = "\t" if file.suffix == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [name.strip() for name in next(reader, [])]
        rows: list[tuple[int, dict[str, object]]] = []
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1  # a quoted cell may span lines: report the first
            if not any(cell.strip() for cell in cells):
                continue  # a blank line, or one of only delimiters (spreadsheets write those)
            extra = cells[len(header):]
            if any(cell.strip() for cell in extra):
                name = "tab" if delimiter == "\t" else "comma"
                raise ConfigError(
                    f"{file} line {line} has {len(cells)} cells but the header has {len(header)} "
                    f"({', '.join(header)}); quote a cell that holds a {name}"
                )
            rows.append((line, dict(zip(header, cells))))
    except csv.Error as exc:
        raise ConfigError(f"{file} line {reader.line_num} is not valid {file.suffix[1:].upper()}: {exc}") from None
    return _Rows(file, rows, header, json=False)


def _read_rows(file: Path) -> _Rows:
    if not file.is_file():
        raise ConfigError(f"data file {file} does not exist")
    if file.suffix not in (".jsonl", ".csv", ".tsv"):
        raise ConfigError(f"data file {file} must end in .csv, .tsv or .jsonl")
    text = _decode(file)
    return _jsonl_rows(file, text) if file.suffix == ".jsonl" else _delimited_rows(file, text)


def _required(rows: _Rows, line: int, row: dict[str, object], column: str) -> str:
    """The text or label of one row, which must be there and not empty."""
    where, what = f"{rows.file} line {line}", "field" if rows.json else "cell"
    if column not in row:
        raise ConfigError(f"{where} has no {column!r} {what}; {_EVERY_ROW}")
    value = row[column]
    if isinstance(value, (dict, list, bool)):
        raise ConfigError(f"{where}: {column!r} is {_JSON_KINDS.get(type(value), 'an object')}, "
                          f"expected a string; {_EVERY_ROW}")
    if value is None or not str(value).strip():
        raise ConfigError(f"{where} has an empty {column!r} {what}; {_EVERY_ROW}")
    return str(value)


def _cell(row: dict[str, object], column: str) -> str:
    """An optional column's value as a string, ``""`` where the row has none."""
    value = row.get(column)
    return "" if value is None else str(value)


def read_labelled(path: str | Path) -> Table:
    """Read a ``.csv``, ``.tsv`` or ``.jsonl`` file with a text and a label column (and any others).

    Raises:
        ConfigError: the file is missing, not UTF-8, not a table, has no text or label column,
            a row lacks its text or label, or it has no rows.
    """
    file = Path(path)
    rows = _read_rows(file)
    text = _pick(rows.columns, TEXT_COLUMNS, file, "text")
    label = _pick(rows.columns, LABEL_COLUMNS, file, "label")
    texts, labels = [], []
    for line, row in rows.rows:
        texts.append(_required(rows, line, row, text))
        labels.append(_required(rows, line, row, label))
    if not texts:
        raise ConfigError(f"data file {file} has no examples")
    others = [column for column in rows.columns if column not in (text, label)]
    return Table(
        examples=Examples(texts, labels, str(file)),
        lines=[line for line, _ in rows.rows],
        columns={column: [_cell(row, column) for _, row in rows.rows] for column in others},
    )


def read_table(path: str | Path) -> Examples:
    """Read a ``.csv``, ``.tsv`` or ``.jsonl`` file with a text and a label column."""
    return read_labelled(path).examples


def read_column(path: str | Path, column: str) -> list[str]:
    """One column of a table as strings (``""`` where a row has none), or ``[]`` when the table
    has no such column."""
    rows = _read_rows(Path(path))
    return [_cell(row, column) for _, row in rows.rows] if column in rows.columns else []
