"""``mu similarity``: a target's neighbours and weights, step by step; export the matrix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.errors import ConfigError
from merginguriel_core.explain import Explanation, explanation_table, fallback_explanation, plot_explanation
from merginguriel_core.interfaces import WeightingRequest
from merginguriel_core.languages import resolve_language
from merginguriel_core.models import collect_models
from merginguriel_core.params import parse_assignments
from merginguriel_core.plugins import get_registry
from merginguriel_core.selection import (
    check_selection_options, check_weighting_options, parse_manual_weights, select_sources, similarity_matrix_for,
)
from merginguriel_core.similarity import SimilarityMatrix, uriel_weights
from merginguriel_cli import options as opt


def similarity(
    ctx: typer.Context,
    target_lang: opt.TargetLang = None,
    models: opt.Models = None,
    model_pattern: opt.ModelPattern = opt.DEFAULTS["model_pattern"],
    registry: opt.Registry = None,
    model: opt.Model = None,
    top_k: opt.TopK = opt.DEFAULTS["top_k"],
    sinkhorn_iters: opt.SinkhornIters = opt.DEFAULTS["sinkhorn_iters"],
    num_languages: opt.NumLanguages = opt.DEFAULTS["num_languages"],
    include_target: opt.IncludeTarget = False,
    features: opt.Features = opt.DEFAULTS["features"],
    similarity_matrix: opt.SimilarityMatrix = None,
    weighting: opt.Weighting = "uriel",
    weighting_params: opt.WeightingParams = None,
    weights: opt.Weights = None,
    source_langs: opt.SourceLangs = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show how --weighting moves the target's weights at each step, as a table and a PNG bar chart (--plot).")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Where --explain writes its bar chart (default weights_<target>_<weighting>.png).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Let --explain replace an existing --plot file.")] = False,
    export: Annotated[Optional[Path], typer.Option("--export", help="Write the full similarity matrix as CSV.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows of the neighbour table to show.")] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Show --target-lang's most similar languages and the uriel weights each step gives them;
    with --explain, the steps of any --weighting as a table and a bar chart.

    Without --models/--registry/--model every language counts as available.
    """
    check_selection_options(top_k, sinkhorn_iters, num_languages)
    if target_lang is None and export is None:
        raise ConfigError("give --target-lang to see neighbours, or --export PATH to write the matrix")
    if explain:
        registry_ = get_registry()
        chosen = registry_.get("weighting", weighting)  # an unknown name fails before any work
        if target_lang is None:
            raise ConfigError("--explain needs --target-lang")
        check_weighting_options(chosen, opt.given_options(ctx), resolve_language(target_lang).locale,
                                [registry_.get("weighting", name) for name in registry_.names("weighting")])
        plot = plot or Path(f"weights_{resolve_language(target_lang).locale}_{weighting}.png")
        if plot.suffix.lower() != ".png":
            raise ConfigError(f"--plot {plot} must end in .png")
        if not plot.parent.is_dir():
            raise ConfigError(f"the folder {plot.parent} for --plot does not exist")
        if (plot.exists() and not overwrite) or plot.is_symlink() or plot.is_dir():
            raise ConfigError(f"--plot {plot} already exists; choose another path or pass --overwrite")
    elif plot is not None or weighting != "uriel" or weighting_params or weights or source_langs:
        raise ConfigError("--weighting, --weighting-param, --weights, --source-langs and --plot go with --explain")
    if export is not None and (export.exists() or export.is_symlink()):
        raise ConfigError(f"--export {export} already exists; choose another path")
    if export is not None and not export.parent.is_dir():
        raise ConfigError(f"the folder {export.parent} for --export does not exist")
    given_models = models is not None or registry is not None or bool(model)
    available = list(collect_models(models, model_pattern, registry, model or ())) if given_models else []
    target = resolve_language(target_lang).locale if target_lang else None
    request = WeightingRequest(
        target=target, available=tuple(available), top_k=top_k, sinkhorn_iters=sinkhorn_iters,
        num_languages=num_languages, include_target=include_target, features=features,
        similarity_matrix=similarity_matrix,
    )
    matrix = similarity_matrix_for(request)
    if export is not None:
        matrix.to_csv(export, replace=False)
        typer.echo(f"Wrote {len(matrix.locales)}x{len(matrix.locales)} similarity matrix to {export}", err=json_out)
    if target is None:
        return
    if explain:
        _explain(target, weighting, weighting_params, weights, source_langs, available if given_models else
                 [code for code in matrix.locales], request, matrix, plot, json_out, limit, overwrite)
        return
    candidates = available if given_models else [code for code in matrix.locales if code != target or include_target]
    trace = uriel_weights(
        matrix, target, candidates, top_k=top_k, sinkhorn_iters=sinkhorn_iters,
        num_languages=num_languages, include_target=include_target,
    )
    final = dict(trace.selected)
    order = sorted(range(len(trace.locales)), key=lambda i: (-trace.raw[i], trace.locales[i]))
    rows = [
        {
            "locale": trace.locales[i],
            "name": resolve_language(trace.locales[i]).name,
            "similarity": float(trace.raw[i]),
            "after_top_k": float(trace.after_top_k[i]),
            "after_sinkhorn": float(trace.after_sinkhorn[i]),
            "available": trace.locales[i] in candidates,
            "weight": final.get(trace.locales[i], 0.0),
        }
        for i in order
        if trace.locales[i] != target or include_target
    ]
    if json_out:
        typer.echo(json.dumps({"target": target, "features": features, "neighbours": rows,
                               "selected": trace.selected, "notes": trace.notes}, indent=2))
        return
    source = f"--similarity-matrix {similarity_matrix}" if similarity_matrix else f"URIEL {features}"
    typer.echo(f"Target {target} ({resolve_language(target).name}); similarity from {source}; "
               f"top-k {top_k}, Sinkhorn {sinkhorn_iters} iterations, {num_languages} languages")
    typer.echo(f"{'rank':>4}  {'locale':<10} {'language':<22} {'similarity':>10} {'top-k':>8} {'sinkhorn':>9} {'model':>5} {'weight':>7}")
    for rank, row in enumerate(rows[:limit], start=1):
        typer.echo(
            f"{rank:>4}  {row['locale']:<10} {row['name'][:22]:<22} {row['similarity']:>10.4f} "
            f"{row['after_top_k']:>8.4f} {row['after_sinkhorn']:>9.4f} {'yes' if row['available'] else 'no':>5} "
            f"{row['weight']:>7.4f}"
        )
    typer.echo("Selected: " + ", ".join(f"{locale} {weight:.4f}" for locale, weight in trace.selected))
    for note in trace.notes:
        typer.echo(f"Note: {note}", err=True)


def _explain(target: str, weighting: str, weighting_params, weights, source_langs, available: list[str],
             request: WeightingRequest, matrix: SimilarityMatrix, plot: Path, json_out: bool, limit: int,
             replace_plot: bool) -> None:
    """Run ``weighting`` exactly as `mu merge` would and show its steps."""
    selection = select_sources(
        get_registry().get("weighting", weighting), target=target, available=available,
        source_langs=opt.split_list(source_langs) or None, top_k=request.top_k,
        sinkhorn_iters=request.sinkhorn_iters, num_languages=request.num_languages,
        include_target=request.include_target, features=request.features,
        similarity_matrix=request.similarity_matrix, manual_weights=parse_manual_weights(weights or ()),
        params=parse_assignments(weighting_params or (), "--weighting-param"),
    )
    result = selection.result
    explanation = result.trace if isinstance(result.trace, Explanation) else None
    if explanation is None:  # a weighting without its own steps: its weights next to raw similarity
        row = matrix.row(target)
        explanation = fallback_explanation(
            target, result.weights, result.notes,
            {locale: float(row[i]) for i, locale in enumerate(matrix.locales) if locale != target},
        )
    title = f"{weighting} weights for {target} ({resolve_language(target).name})"
    plot_explanation(explanation, plot, title, replace=replace_plot)
    if json_out:
        typer.echo(json.dumps({**explanation.to_json(), "weighting": weighting, "plot": str(plot)}, indent=2))
        return
    typer.echo(f"Target {target} ({resolve_language(target).name}); weighting {weighting}; "
               f"steps: {' -> '.join(name for name, _ in explanation.steps)}")
    typer.echo(explanation_table(explanation, limit))
    typer.echo("Selected: " + ", ".join(f"{locale} {weight:.4f}" for locale, weight in result.weights))
    typer.echo(f"Wrote bar chart to {plot}")
    for note in result.notes:
        typer.echo(f"Note: {note}", err=True)


def register(app: typer.Typer) -> None:
    app.command("similarity")(similarity)
