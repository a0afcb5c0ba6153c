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


def alternate_trainings(description: str, modes, train, *, epochs: float, out: str):
    """The side-by-side training benchmarks' loop: parse ``--base-model --data-dir --locales
    --epochs --out``, then train every mode per language in turn (so all modes see the same
    machine load) with ``train(args, locale, mode)`` and return ``(args, [(locale, mode,
    details), ...])``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base-model", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--locales", default="de-DE,sw-KE")
    parser.add_argument("--epochs", type=float, default=epochs)
    parser.add_argument("--out", type=Path, default=Path(out))
    args = parser.parse_args()
    rows = []
    for locale in args.locales.split(","):
        for mode in modes:
            details = train(args, locale, mode)
            rows.append((locale, mode, details))
            print(f"  {locale} {mode}: {details['seconds']:.0f} s, dev {details['dev_accuracy']:.3f}", file=sys.stderr)
    return args, rows
