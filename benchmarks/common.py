"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

from pathlib import Path


def strategy_options(strategy: str, *, base: Path, stats_dir: Path | None = None) -> list[str]:
    """The ``mu merge`` options ``strategy`` reads among ``--base-model`` and ``--stats-dir``:
    `mu merge` refuses options a strategy would ignore."""
    from merginguriel_core.plugins import get_registry

    read = get_registry().get("strategy", strategy).options_read()
    options = ["--base-model", str(base)] if "base_model" in read else []
    if stats_dir is not None and "stats_dir" in read:
        options += ["--stats-dir", str(stats_dir)]
    return options
