"""Turning the shared selection options into chosen sources, for every command alike."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import typer

from merginguriel_core.languages import resolve_language
from merginguriel_core.models import ModelRef, collect_models
from merginguriel_core.plugins import get_registry
from merginguriel_core.params import parse_assignments
from merginguriel_core.selection import Selection, check_weighting_options, parse_manual_weights, select_sources
from merginguriel_cli.options import split_list


def choose_sources(
    *,
    target_lang: Optional[str],
    weighting: str,
    top_k: int,
    sinkhorn_iters: int,
    num_languages: int,
    include_target: bool,
    features: str,
    similarity_matrix: Optional[Path],
    source_langs: Optional[list[str]],
    weights: Optional[list[str]],
    weighting_params: Optional[list[str]],
    models: Optional[Path],
    model_pattern: str,
    registry: Optional[Path],
    model: Optional[list[str]],
    given: Iterable[str] = (),
) -> tuple[Selection, dict[str, ModelRef]]:
    """Collect the source models, then run the chosen weighting over them.

    ``given`` names the options the user gave explicitly; one the weighting does not read
    is refused (see :func:`merginguriel_core.selection.check_weighting_options`).
    """
    registry_ = get_registry()
    weighting_plugin = registry_.get("weighting", weighting)
    target = resolve_language(target_lang).locale if target_lang is not None else None  # reported before any folder is read
    check_weighting_options(weighting_plugin, given, target,
                            [registry_.get("weighting", name) for name in registry_.names("weighting")])
    refs = collect_models(models, model_pattern, registry, model or ())
    selection = select_sources(
        weighting_plugin,
        target=target_lang,
        available=list(refs),
        source_langs=split_list(source_langs) or None,
        top_k=top_k,
        sinkhorn_iters=sinkhorn_iters,
        num_languages=num_languages,
        include_target=include_target,
        features=features,
        similarity_matrix=similarity_matrix,
        manual_weights=parse_manual_weights(weights or ()),
        params=parse_assignments(weighting_params or (), "--weighting-param"),
    )
    return selection, refs


def print_selection(selection: Selection, refs: dict[str, ModelRef]) -> None:
    """A short table of the chosen sources and weights."""
    target = selection.target or "(none)"
    typer.echo(f"Target {target}, weighting {selection.weighting}: {len(selection.result.weights)} source(s)")
    for locale, weight in selection.result.weights:
        typer.echo(f"  {locale:<10} {weight:8.4f}  {refs[locale].location}")
    for note in selection.result.notes:
        typer.echo(f"Note: {note}", err=True)
