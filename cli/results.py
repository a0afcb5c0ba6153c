"""Writing result files: refuse to replace results unasked, and never leave a half-written file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from merginguriel_core.errors import ConfigError
from merginguriel_core.outputs import check_output_path, write_text_atomically


def check_results_folder(output: Path, names: Iterable[str], overwrite: bool, inputs: Iterable[Path | str | None] = ()) -> None:
    """Refuse an ``output`` folder that already holds one of the files ``names`` (unless
    ``overwrite``), has no parent, is not a folder, or is, holds or lies inside an input."""
    check_output_path(output, inputs)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} exists and is not a folder")
    existing = [name for name in names if (output / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{output / existing[0]} already exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise ConfigError(f"the folder {output.parent} for --output does not exist")


def write_json_atomically(path: Path, data: Any, *, replace: bool = True) -> None:
    """JSON (indented, newline-terminated) through :func:`write_text_atomically`."""
    write_text_atomically(path, json.dumps(data, indent=2) + "\n", replace=replace)


__all__ = ["check_results_folder", "write_json_atomically", "write_text_atomically"]
