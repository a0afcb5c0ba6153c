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
from merginguriel_core.plugins import get_registry
from merginguriel_core.selection import (
    SelectionOptions, SimilarityTable, check_weighting_options, select_sources, similarity_matrix_for, similarity_table,
)
from merginguriel_core.similarity import SimilarityMatrix
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
    weighting: Annotated[str, typer.Option("--weighting", help="With --explain: the weighting plugin whose steps to show (uriel, softmax, ...; see `mu plugins`). Without --explain the table shows uriel's steps.")] = "uriel",
    weighting_params: Annotated[Optional[list[str]], typer.Option("--weighting-param", help="With --explain: a parameter KEY=VALUE of --weighting (repeatable).")] = None,
    weights: Annotated[Optional[list[str]], typer.Option("--weights", help="With --explain --weighting manual: weights LOCALE=WEIGHT,...")] = None,
    source_langs: Annotated[Optional[list[str]], typer.Option("--source-langs", help="With --explain: the candidate source languages (comma-separated or repeated).")] = None,
    target_text: opt.TargetTextFile = None,
    target_text_split: opt.TargetTextSplit = None,
    dataset: Annotated[str, typer.Option("--dataset", help="With --explain: the dataset plugin of --data-dir.")] = "sib200",
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="With --explain: the dataset folder that --target-text-split and the sources' own text come from (representation).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show how --weighting moves the target's weights at each step, as a table and a PNG bar chart (--plot).")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="With --explain: where its bar chart goes (default weights_<target>_<weighting>.png).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --export file or --plot chart.")] = False,
    export: Annotated[Optional[Path], typer.Option("--export", help="Write the full similarity matrix as CSV.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Languages shown in the table (and, with --explain, in the chart).", min=1)] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """Show --target-lang's most similar languages and the uriel weights each step gives them;
    with --explain, the steps of any --weighting as a table and a bar chart.

    Without --models/--registry/--model every language counts as available.
    """
    options = opt.selection_options(ctx)
    options.check()
    if target_lang is None and export is None:
        raise ConfigError("give --target-lang to see neighbours, or --export PATH to write the matrix")
    if explain:
        chosen, plot = _explained_weighting(ctx, options, plot, overwrite)
    elif (plot is not None or weighting != "uriel" or weighting_params or weights or source_langs
          or options.target_text is not None or data_dir is not None):
        raise ConfigError("--weighting, --weighting-param, --weights, --source-langs, --target-text, "
                          "--target-text-split, --data-dir and --plot go with --explain")
    if export is not None and (export.is_dir() or (not overwrite and (export.exists() or export.is_symlink()))):
        raise ConfigError(f"--export {export} already exists; choose another path or pass --overwrite")
    given_models = models is not None or registry is not None or bool(model)
    refs = opt.model_sources(ctx).collect() if given_models else {}
    available = list(refs) if given_models else None
    target = resolve_language(target_lang).locale if target_lang else None
    matrix = similarity_matrix_for(WeightingRequest(target=target, available=tuple(available or ()), features=features,
                                                    similarity_matrix=similarity_matrix))
    if export is not None:
        matrix.to_csv(export, replace=overwrite)
        typer.echo(f"Wrote {len(matrix.locales)}x{len(matrix.locales)} similarity matrix to {export}", err=json_out)
    if target is None:
        return
    if explain:
        _explain(chosen, options, available if available is not None else list(matrix.locales), matrix, plot,
                 json_out, limit, overwrite, {locale: ref.location for locale, ref in refs.items()})
        return
    _print_table(similarity_table(options, available), json_out, limit)


def _explained_weighting(ctx: typer.Context, options: SelectionOptions, plot: Optional[Path], overwrite: bool):
    """The --weighting plugin that --explain shows and the --plot path, both checked."""
    registry_ = get_registry()
    chosen = registry_.get("weighting", options.weighting)  # an unknown name fails before any work
    if options.target is None:
        raise ConfigError("--explain needs --target-lang")
    check_weighting_options(chosen, opt.given_options(ctx), resolve_language(options.target).locale,
                            [registry_.get("weighting", name) for name in registry_.names("weighting")])
    plot = plot or Path(f"weights_{resolve_language(options.target).locale}_{options.weighting}.png")
    if plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot {plot} must end in .png")
    if (plot.exists() and not overwrite) or plot.is_symlink() or plot.is_dir():
        raise ConfigError(f"--plot {plot} already exists; choose another path or pass --overwrite")
    return chosen, plot


def _print_table(table: SimilarityTable, json_out: bool, limit: int) -> None:
    """The neighbour table of `mu similarity` (or its JSON)."""
    options, target = table.options, table.target
    rows = [vars(row) for row in table.neighbours]
    if json_out:
        typer.echo(json.dumps({"target": target, "features": options.features, "neighbours": rows,
                               "selected": [list(pair) for pair in table.selected], "notes": list(table.notes)},
                              indent=2))
        return
    source = f"--similarity-matrix {options.similarity_matrix}" if options.similarity_matrix else f"URIEL {options.features}"
    typer.echo(f"Target {target} ({resolve_language(target).name}); similarity from {source}; "
               f"top-k {options.top_k}, Sinkhorn {options.sinkhorn_iters} iterations, {options.num_languages} languages")
    typer.echo(f"{'rank':>4}  {'locale':<10} {'language':<22} {'similarity':>10} {'top-k':>8} {'sinkhorn':>9} {'model':>5} {'weight':>7}")
    for rank, row in enumerate(rows[:limit], start=1):
        typer.echo(
            f"{rank:>4}  {row['locale']:<10} {row['name'][:22]:<22} {row['similarity']:>10.4f} "
            f"{row['after_top_k']:>8.4f} {row['after_sinkhorn']:>9.4f} {'yes' if row['available'] else 'no':>5} "
            f"{row['weight']:>7.4f}"
        )
    typer.echo("Selected: " + ", ".join(f"{locale} {weight:.4f}" for locale, weight in table.selected))
    for note in table.notes:
        typer.echo(f"Note: {note}", err=True)


def _explain(weighting, options: SelectionOptions, available: list[str], matrix: SimilarityMatrix, plot: Path,
             json_out: bool, limit: int, replace_plot: bool, models: dict[str, str] | None = None) -> None:
    """Run ``weighting`` exactly as `mu merge` would and show its steps."""
    target = resolve_language(options.target).locale
    selection = select_sources(weighting, options, available=available, models=models)
    result = selection.result
    explanation = result.trace if isinstance(result.trace, Explanation) else None
    if explanation is None:  # a weighting without its own steps: its weights next to raw similarity
        row = matrix.row(target)
        explanation = fallback_explanation(
            target, list(selection.weights), result.notes,
            {locale: float(row[i]) for i, locale in enumerate(matrix.locales) if locale != target},
        )
    shown = min(limit, len(explanation.locales))
    title = (f"{weighting.name} weights for {target} ({resolve_language(target).name}): "
             f"each step's share over the {shown} languages shown")
    plot_explanation(explanation, plot, title, limit=limit, replace=replace_plot)
    if json_out:
        typer.echo(json.dumps({**explanation.to_json(), "weighting": weighting.name, "plot": str(plot)}, indent=2))
        return
    typer.echo(f"Target {target} ({resolve_language(target).name}); weighting {weighting.name}; "
               f"steps: {' -> '.join(name for name, _ in explanation.steps)}")
    typer.echo(explanation_table(explanation, limit))
    typer.echo("Selected: " + ", ".join(f"{locale} {weight:.4f}" for locale, weight in selection.weights))
    typer.echo(f"Wrote bar chart to {plot}")
    for note in result.notes:
        typer.echo(f"Note: {note}", err=True)


def register(app: typer.Typer) -> None:
    app.command("similarity")(similarity)
