"""Writing result files: refuse to replace results unasked, and never leave a half-written file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from merginguriel_core.errors import ConfigError


def check_results_folder(output: Path, marker: str, overwrite: bool) -> None:
    """Refuse an ``output`` folder that already holds ``marker`` (unless ``overwrite``) or has no parent."""
    if (output / marker).exists() and not overwrite:
        raise ConfigError(f"{output / marker} already exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise ConfigError(f"the folder {output.parent} for --output does not exist")


def write_text_atomically(path: Path, text: str) -> None:
    """Write to a temporary name beside ``path``, then rename it into place."""
    if not path.parent.is_dir():
        raise ConfigError(f"the folder {path.parent} for {path.name} does not exist")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomically(path: Path, data: Any) -> None:
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")
