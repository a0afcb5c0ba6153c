"""``mu evaluate`` (a classifier on a labelled split) and ``mu evaluate-encoder`` (STS)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.errors import ConfigError
from merginguriel_core.evaluation import check_batching
from merginguriel_core.merge import resolve_device
from merginguriel_core import plan as door
from merginguriel_core.plugins import get_registry
from merginguriel_cli import options as opt
from merginguriel_core.outputs import write_json_atomically


def evaluator_plugins(names: Optional[list[str]]):
    """The evaluators named in ``--evaluators`` (default: all installed)."""
    return list(door.evaluator_objects(opt.split_list(names) or None, get_registry()))


def evaluate(
    model: Annotated[Path, typer.Option("--model", help="Model folder (single, merged, ...).")],
    locale: Annotated[str, typer.Option("--locale", help="Language whose split to evaluate on.")],
    dataset: opt.Dataset = "sib200",
    data_dir: opt.DataDir = None,
    data_file: opt.DataFile = None,
    split: opt.Split = "test",
    evaluators: opt.Evaluators = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the JSON here (refuses an existing file).")] = None,
    batch_size: opt.BatchSize = 64,
    max_length: opt.MaxLength = 128,
    cache_dir: opt.CacheDir = None,
    no_cache: opt.NoCache = False,
    device: opt.Device = "auto",
) -> None:
    """Accuracy and macro-F1 (or the chosen --evaluators) of --model on --locale's --split, as JSON."""
    if output is not None and output.exists():
        raise ConfigError(f"--output {output} already exists; choose another path")
    result = door.evaluate(model, dataset, locale, data_dir=data_dir, data_file=data_file, split=split,
                           evaluators=opt.split_list(evaluators) or None, batch_size=batch_size, max_length=max_length,
                           device=device, cache_dir=cache_dir, no_cache=no_cache, registry=get_registry())
    if output is not None:
        write_json_atomically(output, result, replace=False)
    typer.echo(json.dumps(result, indent=2))


def evaluate_encoder(
    model: Annotated[Path, typer.Option("--model", help="Encoder folder (pre-trained or fine-tuned).")],
    data_file: Annotated[Path, typer.Option("--data-file", help="STS-B-style TSV/CSV/JSONL: sentence1, sentence2, score.")],
    batch_size: opt.BatchSize = 32,
    max_length: opt.MaxLength = 128,
    device: opt.Device = "auto",
) -> None:
    """Spearman correlation between cosine similarity of mean-pooled embeddings and gold scores."""
    from merginguriel_core.sts import evaluate_sts

    check_batching(batch_size, max_length)
    result = evaluate_sts(model, data_file, resolve_device(device), batch_size, max_length)
    typer.echo(json.dumps({"model": str(model), "data": str(data_file), **result}, indent=2))


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("evaluate-encoder")(evaluate_encoder)
