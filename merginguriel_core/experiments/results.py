"""The results folder of an experiment: one ``results.json`` per cell, written atomically.

Layout::

    RESULTS/experiment.json               the spec (checked, defaults filled in), its digest, the runs
    RESULTS/cells/TARGET/CELL/results.json one per cell (CELL: nxn-de-DE, merge-ties@uriel, ...)
    RESULTS/cache/                         logits of each model on each target (the N×N's)
    RESULTS/statistics/                    per-model statistics of fisher/regmean
    RESULTS/models/TARGET/CELL/            merged models, only with --keep-models

A cell's file holds the spec digest, the cell's definition and its hash, the sources with
their weights, the method and params, the metrics, the timings and the package versions,
and a checksum of all of it: a file that does not parse or whose checksum is wrong is
reported and its cell recomputed. A cell is one file, so a killed run leaves whole cells or
none, never a duplicated row.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any, Iterator

from merginguriel_core.notes import note
from merginguriel_core.outputs import write_json_atomically

FORMAT = 1
EXPERIMENT_FILE = "experiment.json"


def cell_file(results: Path, target: str, cell_id: str) -> Path:
    return Path(results) / "cells" / target / cell_id / "results.json"


def _checksum(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def write_cell(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Complete ``record`` (format, time, host, package versions, checksum) and write it atomically."""
    from merginguriel_core.merge import package_versions

    record = {"format": FORMAT, **record, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "host": platform.node(), "packages": package_versions()}
    record = json.loads(json.dumps(record, default=str))
    record["checksum"] = _checksum(record)
    write_json_atomically(path, record)
    return record


def read_cell(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)``, ``(None, None)`` when there is none, or ``(None, why)`` when the file
    is damaged (does not parse, is not a cell record, or fails its checksum)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable ({exc})"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at line {exc.lineno})"
    if not isinstance(record, dict) or "checksum" not in record or "cell" not in record:
        return None, "not a cell's results"
    if record["checksum"] != _checksum(record):
        return None, "its checksum does not match its content"
    return record, None


def iter_cells(results: Path) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """Every cell file under ``results`` with its record (or why it is damaged), sorted by path."""
    for path in sorted((Path(results) / "cells").glob("*/*/results.json")):
        record, damaged = read_cell(path)
        yield path, record, damaged


def load_cells(results: Path) -> list[dict[str, Any]]:
    """The readable cell records; a damaged file is said in a note and left out."""
    records = []
    for path, record, damaged in iter_cells(results):
        if damaged:
            note(f"{path} is damaged ({damaged}); left out (rerun the experiment to recompute it)")
        elif record is not None:
            records.append(record)
    return records


def read_experiment(results: Path) -> dict[str, Any] | None:
    path = Path(results) / EXPERIMENT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}  # damaged: the runner rewrites it, the report says so
