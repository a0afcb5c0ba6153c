"""``mu merge``: choose sources and weights, then stream-merge them into one model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.errors import ConfigError
from merginguriel_core.io import parse_size
from merginguriel_core.merge import MergeRequest, SourceModel, check_plan, check_strategy_options, run_merge
from merginguriel_core.models import resolve_location
from merginguriel_core.params import parse_assignments
from merginguriel_core.plugins import get_registry
from merginguriel_cli import options as opt
from merginguriel_cli.selecting import choose_sources, print_selection


def merge(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the merged model to.")],
    target_lang: opt.TargetLang = None,
    weighting: opt.Weighting = opt.DEFAULTS["weighting"],
    strategy: Annotated[str, typer.Option("--strategy", help="Merge strategy (see `mu plugins`).")] = "linear",
    param: Annotated[Optional[list[str]], typer.Option("--param", help="Strategy parameter KEY=VALUE (repeatable).")] = None,
    base_model: Annotated[Optional[str], typer.Option("--base-model", help="Base model folder or hub id (task-vector strategies).")] = None,
    models: opt.Models = None,
    model_pattern: opt.ModelPattern = opt.DEFAULTS["model_pattern"],
    registry: opt.Registry = None,
    model: opt.Model = None,
    source_langs: opt.SourceLangs = None,
    weights: opt.Weights = None,
    weighting_param: opt.WeightingParams = None,
    top_k: opt.TopK = opt.DEFAULTS["top_k"],
    sinkhorn_iters: opt.SinkhornIters = opt.DEFAULTS["sinkhorn_iters"],
    num_languages: opt.NumLanguages = opt.DEFAULTS["num_languages"],
    include_target: opt.IncludeTarget = False,
    features: opt.Features = opt.DEFAULTS["features"],
    similarity_matrix: opt.SimilarityMatrix = None,
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset plugin of --data-dir for fisher/regmean.")] = "sib200",
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Labelled data for fisher/regmean: a local dataset copy (e.g. SIB-200 folders); each model uses its own language's train split.")] = None,
    data_file: Annotated[Optional[Path], typer.Option("--data-file", help="Labelled data for fisher/regmean: one CSV/TSV/JSONL (text and label columns) for every model.")] = None,
    fisher_examples: Annotated[int, typer.Option("--fisher-examples", help="Examples per model for the Fisher information.")] = 256,
    regmean_examples: Annotated[int, typer.Option("--regmean-examples", help="Examples per model for RegMean's Gram matrices.")] = 256,
    stats_dir: Annotated[Optional[Path], typer.Option("--stats-dir", help="Where per-model statistics are stored and reused (default ~/.cache/merginguriel/statistics).")] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="Token limit per example when computing statistics.")] = 128,
    device: Annotated[str, typer.Option("--device", help="auto (GPU when present), cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="Output dtype of floating tensors: auto (as the sources), float32, float16, bfloat16.")] = "auto",
    chunk_size: Annotated[str, typer.Option("--chunk-size", help="Largest slice of one tensor merged at once, per source (float32 bytes); auto: cache-sized on the CPU (2 MiB), up to 32 MiB on a GPU, all chunks within an eighth of one model.")] = "auto",
    max_shard_size: Annotated[str, typer.Option("--max-shard-size", help="Largest output safetensors shard.")] = "2GB",
    seed: Annotated[int, typer.Option("--seed", help="Seed for random strategies (DARE).")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output folder.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show sources and weights, merge nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the merge details as JSON when done.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Merge source models into one for --target-lang, weighted by --weighting."""
    strategy_plugin = get_registry().get("strategy", strategy)
    get_registry().get("dataset", dataset)
    given = opt.given_options(ctx)
    check_strategy_options(strategy_plugin, given, [get_registry().get("strategy", n) for n in get_registry().names("strategy")])
    selection, refs = choose_sources(
        target_lang=target_lang, weighting=weighting, top_k=top_k, sinkhorn_iters=sinkhorn_iters,
        num_languages=num_languages, include_target=include_target, features=features,
        similarity_matrix=similarity_matrix, source_langs=source_langs, weights=weights,
        weighting_params=weighting_param, models=models, model_pattern=model_pattern,
        registry=registry, model=model, given=given,
    )
    if base_model is None and strategy_plugin.needs_base:
        base_model = _default_base([locale for locale, _ in selection.result.weights], refs)
    request = MergeRequest(
        sources=[SourceModel(locale, Path(refs[locale].location), weight) for locale, weight in selection.result.weights],
        strategy=strategy_plugin,
        output=output,
        params=parse_assignments(param or (), "--param"),
        base=Path(base_model) if base_model else None,
        device=device,
        dtype=dtype,
        chunk_bytes=None if chunk_size == "auto" else parse_size(chunk_size),
        max_shard_bytes=parse_size(max_shard_size),
        overwrite=overwrite,
        seed=seed,
        progress=progress,
        options={
            "dataset": dataset, "data_dir": data_dir, "data_file": data_file, "fisher_examples": fisher_examples,
            "regmean_examples": regmean_examples, "stats_dir": stats_dir, "max_length": max_length, "seed": seed,
        },
        details={
            "target": selection.target,
            "weighting": selection.weighting,
            "weighting_details": selection.result.details,
        },
    )
    # Everything checkable without model files is checked before any model is fetched or read.
    check_plan(request)
    print_selection(selection, refs)
    if dry_run:
        typer.echo("Dry run: nothing merged.")
        return
    request.sources = [_fetched(s, refs[s.locale].location) for s in request.sources]
    if base_model:
        request.base = resolve_location(base_model)
        if str(request.base) != base_model:
            request.details["base_model_origin"] = base_model
    summary = run_merge(request)
    typer.echo(
        f"Merged {summary.tensors} tensors ({summary.bytes_written / 1e6:.1f} MB per model) with "
        f"{strategy_plugin.name} on {summary.device} in {summary.seconds:.1f} s -> {summary.output}"
    )
    if json_out:
        typer.echo(json.dumps(summary.details, indent=2))


def _fetched(source: SourceModel, location: str) -> SourceModel:
    """The source with a local folder (a hub snapshot for hub ids), remembering its origin."""
    path = resolve_location(location)
    return SourceModel(source.locale, path, source.weight, None if str(path) == location else location)


def _default_base(selected: list[str], refs) -> Optional[str]:
    """The registry's base_model when every selected source names the same one."""
    bases = {refs[locale].base_model for locale in selected}
    if len(bases) == 1:
        return bases.pop()
    if None not in bases:
        raise ConfigError(
            f"the selected sources name different base models in the registry ({', '.join(sorted(bases))}); "
            f"pass --base-model"
        )
    return None


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)
