"""``mu merge``: plan the merge from the options (:func:`~merginguriel_core.plan.plan_merge`), print
the sources, run the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.adapters import adapter_line
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import LabelledData
from merginguriel_core.merge import run_merge
from merginguriel_core.params import parse_assignments
from merginguriel_core.plan import fetch_models, plan_merge
from merginguriel_core.plugins import get_registry
from merginguriel_cli import options as opt
from merginguriel_cli.selecting import print_selection


def merge(
    ctx: typer.Context,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder to write the merged model to (not needed with --dry-run).")] = None,
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
    target_text: opt.TargetTextFile = None,
    target_text_split: opt.TargetTextSplit = None,
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset plugin of --data-dir (for fisher/regmean and --target-text-split).")] = "sib200",
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="A local dataset copy (e.g. SIB-200 folders): labelled data for fisher/regmean (each model its own language's train split), and the text of --target-text-split and of the sources for representation.")] = None,
    data_file: Annotated[Optional[Path], typer.Option("--data-file", help="Labelled data for fisher/regmean: one CSV/TSV/JSONL (text and label columns) for every model.")] = None,
    stats_dir: Annotated[Optional[Path], typer.Option("--stats-dir", help="Where per-model statistics are stored and reused (default ~/.cache/merginguriel/statistics).")] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="Token limit per example when computing statistics.")] = 128,
    device: Annotated[str, typer.Option("--device", help="auto (GPU when present), cpu or cuda.")] = "auto",
    output_format: Annotated[str, typer.Option("--output-format", help="model: a whole model (base + merged update), loadable by transformers; adapter (adapter sources): one LoRA adapter, loadable by peft.")] = "model",
    adapter_rank: Annotated[Optional[int], typer.Option("--adapter-rank", help="With --output-format adapter: the merged adapter's rank by truncated SVD (default: the sources' largest; linear without it: the exact concatenation).")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Output dtype of floating tensors: auto (as the sources), float32, float16, bfloat16.")] = "auto",
    chunk_size: Annotated[str, typer.Option("--chunk-size", help="Largest slice of one tensor merged at once, per source (float32 bytes); auto: cache-sized on the CPU (2 MiB), up to 32 MiB on a GPU, all chunks within an eighth of one model.")] = "auto",
    max_shard_size: Annotated[str, typer.Option("--max-shard-size", help="Largest output safetensors shard.")] = "2GB",
    seed: Annotated[int, typer.Option("--seed", help="Seed for random strategies (DARE).")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output folder.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show sources and weights, merge nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the merge details as JSON when done.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    config: opt.Config = None,
) -> None:
    """Merge source models into one for --target-lang, weighted by --weighting."""
    if output is None and not dry_run:
        raise ConfigError("mu merge needs --output FOLDER (only --dry-run goes without)")
    data, given = None, opt.given_options(ctx)
    chosen = get_registry().get("strategy", strategy)
    if "target_text" in given and not chosen.needs_data:
        given -= {"data_dir", "dataset"}  # they locate the target text (and the sources' own text)
    elif data_dir is not None or data_file is not None:
        data = LabelledData(dataset, data_dir, data_file, max_length=max_length, seed=seed, stats_dir=stats_dir)
    plan = plan_merge(
        output, strategy=strategy, selection=opt.selection_options(ctx), models=opt.model_sources(ctx),
        params=parse_assignments(param or (), "--param"), base_model=base_model, data=data, device=device,
        dtype=dtype, chunk_size=chunk_size, max_shard_size=max_shard_size, overwrite=overwrite, seed=seed,
        progress=progress, registry=get_registry(), given=given, fetch=False, output_format=output_format,
        adapter_rank=adapter_rank,
    )
    print_selection(plan.selection, plan)
    if dry_run:
        typer.echo("Dry run: nothing merged.")
        return
    summary = run_merge(fetch_models(plan))
    typer.echo(
        f"Merged {summary.tensors} tensors ({summary.bytes_written / 1e6:.1f} MB per model) with "
        f"{plan.strategy.name} on {summary.device} in {summary.seconds:.1f} s -> {summary.output}"
    )
    if summary.details.get("output"):
        typer.echo(adapter_line(summary.details["output"]))
    if json_out:
        typer.echo(json.dumps(summary.details, indent=2))


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)
