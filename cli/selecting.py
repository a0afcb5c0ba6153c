"""Turning the shared selection options into chosen sources, for every command alike."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from merginguriel_core.languages import resolve_language
from merginguriel_core.models import ModelRef, collect_models
from merginguriel_core.plugins import get_registry
from merginguriel_core.params import parse_assignments
from merginguriel_core.selection import Selection, parse_manual_weights, select_sources
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
) -> tuple[Selection, dict[str, ModelRef]]:
    """Collect the source models, then run the chosen weighting over them."""
    weighting_plugin = get_registry().get("weighting", weighting)
    if target_lang is not None:
        resolve_language(target_lang)  # a bad target is reported before any folder is read
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
