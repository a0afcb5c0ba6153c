"""Options shared by several commands: one definition each, so they mean the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from merginguriel_core.models import DEFAULT_PATTERN
from merginguriel_core import plan as _door
from merginguriel_core.plan import ModelSources
from merginguriel_core.selection import SELECTION_DEFAULTS, SelectionOptions

TargetLang = Annotated[
    Optional[str],
    typer.Option("--target-lang", help="Target language: MASSIVE locale (sw-KE), FLORES-200 (swh_Latn) or ISO 639-3 code."),
]
Weighting = Annotated[str, typer.Option("--weighting", help="Weighting plugin: uriel, average, manual, ... (see `mu plugins`).")]
TopK = Annotated[int, typer.Option("--top-k", help="Keep the top-k most similar languages per language before Sinkhorn.")]
SinkhornIters = Annotated[int, typer.Option("--sinkhorn-iters", help="Sinkhorn normalisation iterations.")]
NumLanguages = Annotated[int, typer.Option("--num-languages", help="Use at most this many source models.")]
IncludeTarget = Annotated[bool, typer.Option("--include-target", help="Allow the target language's own model as a source.")]
Features = Annotated[
    str, typer.Option("--features", help="URIEL feature set(s), e.g. syntax_knn or syntax_knn+phonology_knn.")
]
SimilarityMatrix = Annotated[
    Optional[Path], typer.Option("--similarity-matrix", help="CSV similarity matrix to use instead of URIEL.")
]
SourceLangs = Annotated[
    Optional[list[str]], typer.Option("--source-langs", help="Only consider these source locales (comma-separated or repeated).")
]
Weights = Annotated[
    Optional[list[str]], typer.Option("--weights", help="Manual weights LOCALE=WEIGHT,... (with --weighting manual).")
]
WeightingParams = Annotated[
    Optional[list[str]], typer.Option("--weighting-param", help="Weighting parameter KEY=VALUE (repeatable).")
]
TargetTextFile = Annotated[Optional[Path], typer.Option(
    "--target-text", help="Unlabelled target-language text, one sentence per line, for weightings that read it "
    "(adamerging, representation).")]
TargetTextSplit = Annotated[Optional[str], typer.Option(
    "--target-text-split", help="Take the target text from this split of --data-dir (train, dev or test); its labels "
    "are never read.")]
Models = Annotated[Optional[Path], typer.Option("--models", help="Folder of per-locale model folders.")]
ModelPattern = Annotated[
    str, typer.Option("--model-pattern", help="Folder-name pattern of per-locale models; must contain {locale}.")
]
Registry = Annotated[
    Optional[Path], typer.Option("--registry", help="CSV with columns locale,path[,base_model] (path may be a hub id).")
]
Model = Annotated[
    Optional[list[str]], typer.Option("--model", help="A source model LOCALE=PATH_OR_HUB_ID (repeatable).")
]

#: Defaults of the shared options: the selection's are :class:`SelectionOptions`' own.
DEFAULTS = {**SELECTION_DEFAULTS, "model_pattern": DEFAULT_PATTERN}


def selection_options(ctx: typer.Context, target: Optional[str] = None) -> SelectionOptions:
    """The shared selection options of this command (``--target-lang``, ``--weighting``,
    ``--top-k`` ...) as one :class:`SelectionOptions`; ``target`` replaces ``--target-lang``
    (for commands with ``--target-langs``)."""
    from merginguriel_core.params import parse_assignments
    from merginguriel_core.selection import parse_manual_weights

    p = ctx.params
    return SelectionOptions(
        target=target if target is not None else p.get("target_lang"),
        weighting=p.get("weighting", DEFAULTS["weighting"]),
        weighting_params=parse_assignments(p.get("weighting_param") or p.get("weighting_params") or (),
                                           "--weighting-param"),
        top_k=p.get("top_k", DEFAULTS["top_k"]),
        sinkhorn_iters=p.get("sinkhorn_iters", DEFAULTS["sinkhorn_iters"]),
        num_languages=p.get("num_languages", DEFAULTS["num_languages"]),
        include_target=p.get("include_target", False),
        features=p.get("features", DEFAULTS["features"]),
        similarity_matrix=p.get("similarity_matrix"),
        source_langs=tuple(split_list(p.get("source_langs"))) or None,
        manual_weights=parse_manual_weights(p.get("weights") or ()) or None,
        target_text=target_text(ctx),
    )


def target_text(ctx: typer.Context):
    """``--target-text FILE`` or ``--target-text-split SPLIT`` (of ``--dataset`` at
    ``--data-dir``) as a :class:`~merginguriel_core.target_text.TargetText`; ``None`` without either."""
    from merginguriel_core.target_text import TargetText

    p = ctx.params
    file, split = p.get("target_text"), p.get("target_text_split")
    if file is None and split is None:
        return None
    location = p.get("data_dir") if p.get("data_dir") is not None else p.get("data_file")
    return TargetText(file=file, split=split, dataset=p.get("dataset") or "sib200",
                      location=str(location) if location is not None else None)


def model_sources(ctx: typer.Context) -> ModelSources:
    """``--models``, ``--model-pattern``, ``--registry`` and ``--model`` as one :class:`ModelSources`."""
    p = ctx.params
    return ModelSources(p.get("models"), p.get("model_pattern", DEFAULT_PATTERN), p.get("registry"),
                        tuple(p.get("model") or ()))


def given_options(ctx: typer.Context) -> set[str]:
    """The options of this command that the user gave (on the command line, through the
    environment or in ``--config``), not left at their defaults; names with underscores (``top_k``)."""
    given = {"COMMANDLINE", "ENVIRONMENT", "DEFAULT_MAP"}  # DEFAULT_MAP: from --config; compare enum names
    names = {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", None) in given}
    return names | ({"target_text"} if "target_text_split" in names else set())


def split_list(values: Optional[list[str]]) -> list[str]:
    """Flatten repeated and comma-separated option values."""
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]

Dataset = Annotated[str, typer.Option("--dataset", help="Dataset plugin: sib200, massive, table, ... (see `mu plugins`).")]
DataDir = Annotated[
    Optional[Path], typer.Option("--data-dir", help="Local copy of the dataset (SIB-200 folders, MASSIVE 1.1 .jsonl files); default: its hub id.")
]
DataFile = Annotated[Optional[Path], typer.Option("--data-file", help="One CSV/TSV/JSONL file with text and label columns.")]
Device = Annotated[str, typer.Option("--device", help="auto (GPU when present), cpu or cuda.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]
CacheDir = Annotated[Optional[Path], typer.Option("--cache-dir", help="Logits cache (default ~/.cache/merginguriel/logits).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the logits cache.")]
Split = Annotated[str, typer.Option("--split", help="train, dev or test.")]
Evaluators = Annotated[Optional[list[str]], typer.Option("--evaluators", help="Evaluator plugins (default: all).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Examples per batch.")]
MaxLength = Annotated[int, typer.Option("--max-length", help="Token limit per example.")]


def check_locales(data, location: Optional[str], locales: list[str], split: str) -> None:
    """Every locale in ``locales`` must be in the dataset; for one that is not listed, the
    dataset's own loader explains (e.g. two folders for one language, and which to name)."""
    from merginguriel_core.errors import ConfigError

    available = set(data.locales(location))
    for locale in [code for code in locales if available and code not in available]:
        data.load(location, locale, split)  # raises its own error naming what it has
        raise ConfigError(f"dataset {data.name} has no {locale}; it has {', '.join(sorted(available))}")


data_location = _door.data_location  # one definition, in the core


def _config_value(param, value, key: str, where: str):
    """A config value as the option takes it: a list for a repeatable option (a mapping
    ``{density: 0.5}`` becomes ``["density=0.5"]``), a single value otherwise."""
    from merginguriel_core.errors import ConfigError

    if getattr(param, "multiple", False):
        if isinstance(value, dict):
            return [f"{k}={v}" for k, v in value.items()]
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{where}: {key} takes one value, got a {type(value).__name__}")
    return value


def _load_config(ctx: typer.Context, param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
    """Eager ``--config`` callback: the file's options become this command's defaults, so
    options on the command line override them. A ``merge_details.json`` redoes that merge."""
    from merginguriel_core.configs import is_merge_record, merge_record_options, read_config
    from merginguriel_core.errors import ConfigError

    if value is None:
        return value
    command = ctx.command
    params = {p.name: p for p in command.params if p.name not in ("config", "help")}
    entries = read_config(value)
    if is_merge_record(entries):
        if command.name != "merge":
            raise ConfigError(f"--config {value} is a merge record (merge_details.json); only mu merge reads one")
        values = merge_record_options({key: item for key, (item, _) in entries.items()})
        values = {k: v for k, v in values.items() if v != params[k].default and v != []}
    else:
        values = {}
        for key, (item, line) in entries.items():
            name = key.lstrip("-").replace("-", "_")
            where = f"--config {value}:{line}"
            if name not in params:
                import difflib

                close = difflib.get_close_matches(name, list(params), n=1)
                hint = f"did you mean {close[0].replace('_', '-')!r}? " if close else ""
                raise ConfigError(f"{where}: unknown key {key!r} for mu {command.name}; {hint}the keys are its "
                                  f"options without the dashes (see mu {command.name} --help)")
            if item is not None:
                values[name] = _config_value(params[name], item, key, where)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


Config = Annotated[
    Optional[Path],
    typer.Option("--config", is_eager=True, callback=_load_config,
                 help="YAML or JSON file of this command's options (keys: option names, e.g. top-k: 5); options "
                      "on the command line override it. A merge_details.json redoes that merge (mu merge)."),
]

# fine-tuning (mu train, mu train-iterative)
LearningRate = Annotated[float, typer.Option("--learning-rate", help="Peak AdamW learning rate (linear warm-up, then linear decay).")]
FreezeEmbeddings = Annotated[bool, typer.Option("--freeze-embeddings", help="Keep the (large) embedding matrix fixed.")]
GroupByLength = Annotated[bool, typer.Option("--group-by-length/--no-group-by-length", help="Batch training examples of similar length together (less padding, same examples per epoch).")]
MaxTrainExamples = Annotated[Optional[int], typer.Option("--max-train-examples", help="Use only the first N training examples of each language.")]
