"""``mu evaluate`` (a classifier on a labelled split) and ``mu evaluate-encoder`` (STS)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.errors import ConfigError
from merginguriel_core.evaluation import (
    LogitsCache, Predictor, check_batching, default_cache_dir, gold_ids, label_space_for, score,
)
from merginguriel_core.languages import resolve_language
from merginguriel_core.merge import resolve_device
from merginguriel_core.plugins import get_registry
from merginguriel_cli import options as opt
from merginguriel_cli.results import write_json_atomically


def evaluator_plugins(names: Optional[list[str]]):
    registry = get_registry()
    chosen = opt.split_list(names) or registry.names("evaluator")
    return [registry.get("evaluator", name) for name in chosen]


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
    check_batching(batch_size, max_length)
    data = get_registry().get("dataset", dataset)
    chosen = evaluator_plugins(evaluators)
    if output is not None and output.exists():
        raise ConfigError(f"--output {output} already exists; choose another path")
    if not model.is_dir():
        raise ConfigError(f"--model {model} is not a folder")
    location = opt.data_location(data_dir, data_file)
    code = resolve_language(locale).locale
    examples = data.load(location, code, split)
    label_space = label_space_for(data, location, [model])
    predictor = Predictor(LogitsCache(None if no_cache else (cache_dir or default_cache_dir())), resolve_device(device),
                          batch_size, max_length)
    logits = predictor.logits(model, examples, label_space)
    result = {
        "model": str(model), "dataset": dataset, "data": location or data.hub_id, "locale": code, "split": split,
        "examples": len(examples), "cached": predictor.cache_hits > 0,
        **score(logits.argmax(-1), gold_ids(examples, label_space), len(label_space), chosen),
    }
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
