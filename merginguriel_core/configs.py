"""Run configs: a command's options in a YAML (or JSON) file, and a finished merge as one.

:func:`read_config` reads a mapping of option names to values and remembers the line of
each key, so an unknown or malformed entry is reported where it is. :func:`merge_record_options`
turns a ``merge_details.json`` (what every merge writes) into ``mu merge`` options that
redo the same merge: the same sources with the same weights (as a manual weighting), the
same strategy and params, base model, dtype, seed, chunk size and labelled data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from merginguriel_core.errors import ConfigError

#: Keys of ``merge_details.json`` that identify it as a merge record.
RECORD_KEYS = frozenset({"strategy", "sources", "packages"})


def read_config(path: str | Path) -> dict[str, tuple[Any, int]]:
    """``{key: (value, line)}`` of the top-level mapping in ``path`` (YAML or JSON; line 1-based).

    A file that does not exist, does not parse, or is not a mapping is a one-line
    :class:`ConfigError` naming the file (and the line, where the parser gives one).
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path} cannot be read: {exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--config {path}{where}: not valid YAML or JSON ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or root is None or not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"--config {path} must hold a mapping of option names to values, "
                          f"not a {type(data).__name__}")
    lines = {str(key.value): key.start_mark.line + 1 for key, _ in root.value}
    return {str(key): (value, lines.get(str(key), 1)) for key, value in data.items()}


def is_merge_record(entries: Mapping[str, Any]) -> bool:
    """Whether a config's keys are those of a ``merge_details.json``."""
    return RECORD_KEYS <= set(entries)


def merge_record_options(record: Mapping[str, Any]) -> dict[str, Any]:
    """``mu merge`` options (names with underscores) that redo the merge ``record`` describes.

    The sources become ``--model LOCALE=PATH`` (the hub id where a source was fetched) with
    ``--weighting manual`` and their recorded weights, so the result does not depend on
    URIEL or on which other models are around; everything that decides the tensors comes
    along (strategy, params, base model, dtype, seed, chunk size, labelled data). The output
    folder and the device do not: give ``--output``, and the device is chosen afresh.
    """
    sources = record.get("sources") or []
    if not sources:
        raise ConfigError("the merge record lists no sources")
    models = [f"{s['locale']}={s.get('origin') or s['path']}" for s in sources]
    options: dict[str, Any] = {
        "weighting": "manual",
        "weights": [",".join(f"{s['locale']}={float(s['weight'])!r}" for s in sources)],
        "model": models,
        "strategy": record["strategy"],
        "param": [f"{key}={value}" for key, value in (record.get("params") or {}).items()],
    }
    target = record.get("target")
    if target:
        options["target_lang"] = target
        if target in {s["locale"] for s in sources}:
            options["include_target"] = True
    base = record.get("base_model_origin") or record.get("base_model")
    if base:
        options["base_model"] = base
    for key in ("dtype", "seed"):
        if record.get(key) is not None:
            options[key] = record[key]
    if record.get("chunk_bytes"):
        options["chunk_size"] = str(record["chunk_bytes"])
    data = record.get("data") or {}
    for key in ("dataset", "data_dir", "data_file", "max_length", "stats_dir"):
        if data.get(key) is not None:
            options[key] = data[key]
    return options


def load_record(path: str | Path) -> dict[str, Any]:
    """A ``merge_details.json`` as a dictionary (for tests and scripts)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
