"""Printing chosen sources, the same way for every command that selects them."""

from __future__ import annotations

from typing import Any

import typer

from merginguriel_core.selection import Selection


def print_selection(selection: Selection | None, plan: Any = None, locations: dict[str, Any] | None = None) -> None:
    """A short table of the chosen sources and weights, then the weighting's notes.

    The location of each source is taken from ``plan`` (a merge plan: its sources' folders or
    hub ids) or from ``locations`` (locale -> folder).
    """
    if selection is None:
        return
    where = {s.locale: s.path for s in plan.sources} if plan is not None else dict(locations or {})
    typer.echo(f"Target {selection.target or '(none)'}, weighting {selection.weighting}: "
               f"{len(selection.weights)} source(s)")
    for locale, weight in selection.weights:
        typer.echo(f"  {locale:<10} {weight:8.4f}  {where.get(locale, '')}")
    for note in selection.notes:
        typer.echo(f"Note: {note}", err=True)
