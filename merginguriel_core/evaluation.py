"""Evaluation: logits on a labelled split (cached on disk), metrics, the N×N zero-shot matrix
and the baselines derived from it.

The logits cache is keyed by the model's files (names, sizes, modification times, config),
the examples themselves (texts and labels), the label space and the token limit, so a
changed model or dataset never reuses a stale entry. Entries are ``.npz`` files (no pickle)
written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import torch

from merginguriel_core.data import Examples
from merginguriel_core.errors import ConfigError, ModelError
from merginguriel_core.interfaces import Dataset, Evaluator

if TYPE_CHECKING:  # imported where used: pandas costs every `mu` call ~0.5 s
    import pandas as pd


def default_cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "merginguriel" / "logits"


def model_fingerprint(model_dir: Path) -> str:
    """Changes whenever the model's weights or config change."""
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name == "config.json"))
    if not any(p.suffix == ".safetensors" for p in files):
        raise ModelError(f"no safetensors weights in {model_dir}")
    for file in files:
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        if file.name == "config.json":
            digest.update(file.read_bytes())
    return digest.hexdigest()[:24]


def examples_fingerprint(examples: Examples) -> str:
    digest = hashlib.sha256()
    for text, label in zip(examples.texts, examples.labels):
        digest.update(text.encode() + b"\x00" + label.encode() + b"\x01")
    return digest.hexdigest()[:24]


def model_labels(model_dir: Path) -> list[str]:
    """The model's labels in id order, from its config.json."""
    config = model_dir / "config.json"
    if not config.is_file():
        raise ModelError(f"{model_dir} has no config.json")
    id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def check_label_space(model_dir: Path, label_space: list[str]) -> None:
    """The model must predict exactly the dataset's labels, in the same id order."""
    labels = model_labels(model_dir)
    if labels != label_space:
        differ = next((i for i, (a, b) in enumerate(zip(labels, label_space)) if a != b), min(len(labels), len(label_space)))
        raise ConfigError(
            f"model {model_dir} has labels {len(labels)} ({', '.join(labels[:4])}...) but the dataset has "
            f"{len(label_space)} ({', '.join(label_space[:4])}...); they first differ at id {differ}"
        )


class LogitsCache:
    """Logits of (model, examples) pairs on disk; ``None`` root disables caching."""

    def __init__(self, root: Path | None):
        self.root = root

    def key(self, model_dir: Path, examples: Examples, label_space: list[str], max_length: int) -> str:
        raw = json.dumps([model_fingerprint(model_dir), examples_fingerprint(examples), label_space, max_length])
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def get(self, key: str) -> np.ndarray | None:
        if self.root is None or not (self.root / f"{key}.npz").is_file():
            return None
        with np.load(self.root / f"{key}.npz", allow_pickle=False) as data:
            return data["logits"]

    def put(self, key: str, logits: np.ndarray) -> None:
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.tmp-{os.getpid()}.npz"
        np.savez(tmp, logits=logits.astype(np.float32))
        os.replace(tmp, self.root / f"{key}.npz")


@dataclass
class Predictor:
    """Loads models on demand (one at a time) and computes logits, through the cache."""

    cache: LogitsCache
    device: torch.device
    batch_size: int = 64
    max_length: int = 128
    progress: bool = False
    forward_passes: int = 0
    cache_hits: int = 0
    _loaded: tuple[Path, Any, Any] | None = field(default=None, repr=False)

    def logits(self, model_dir: Path, examples: Examples, label_space: list[str]) -> np.ndarray:
        check_label_space(model_dir, label_space)
        key = self.cache.key(model_dir, examples, label_space, self.max_length)
        cached = self.cache.get(key)
        if cached is not None and cached.shape == (len(examples), len(label_space)):
            self.cache_hits += 1
            return cached
        from merginguriel_core.training import predict_logits

        model, tokenizer = self._model(model_dir)
        logits = predict_logits(model, tokenizer, examples.texts, self.batch_size, self.max_length, self.device,
                                self.progress, desc=f"{model_dir.name}")
        self.forward_passes += 1
        self.cache.put(key, logits)
        return logits

    def _model(self, model_dir: Path):
        if self._loaded is None or self._loaded[0] != model_dir:
            from merginguriel_core.statistics import load_classifier

            self._loaded = None
            model, tokenizer = load_classifier(model_dir, self.device)
            self._loaded = (model_dir, model, tokenizer)
        return self._loaded[1], self._loaded[2]


def gold_ids(examples: Examples, label_space: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(label_space)}
    unknown = sorted({label for label in examples.labels if label not in index})
    if unknown:
        raise ConfigError(f"labels {', '.join(unknown[:5])} in {examples.source} are not in the dataset's label space")
    return np.array([index[label] for label in examples.labels])


def score(predictions: np.ndarray, labels: np.ndarray, num_labels: int, evaluators: Iterable[Evaluator]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for evaluator in evaluators:
        metrics.update(evaluator.evaluate(predictions, labels, num_labels))
    return metrics


@dataclass
class NxN:
    """The N×N zero-shot results: metric -> DataFrame (rows source, columns target)."""

    matrices: dict[str, pd.DataFrame]
    seconds: dict[tuple[str, str], float]
    forward_passes: int
    cache_hits: int


def nxn_matrix(models: Mapping[str, Path], targets: list[str], dataset: Dataset, location: str | None, split: str,
               evaluators: list[Evaluator], predictor: Predictor) -> NxN:
    """Evaluate every source model on every target's split."""
    import pandas as pd

    label_space = dataset.labels(location)
    data = {target: dataset.load(location, target, split) for target in targets}
    gold = {target: gold_ids(examples, label_space) for target, examples in data.items()}
    values: dict[str, dict[str, dict[str, float]]] = {}
    seconds = {}
    for source, model_dir in models.items():
        for target in targets:
            started = time.perf_counter()
            logits = predictor.logits(model_dir, data[target], label_space)
            metrics = score(logits.argmax(-1), gold[target], len(label_space), evaluators)
            seconds[(source, target)] = time.perf_counter() - started
            for metric, value in metrics.items():
                values.setdefault(metric, {}).setdefault(source, {})[target] = value
    matrices = {
        metric: pd.DataFrame.from_dict(rows, orient="index").reindex(index=list(models), columns=targets)
        for metric, rows in values.items()
    }
    for frame in matrices.values():
        frame.index.name = "source"
    return NxN(matrices, seconds, predictor.forward_passes, predictor.cache_hits)


def best_overall_zero_shot(matrix: pd.DataFrame, target: str) -> tuple[str, float]:
    """The best source for ``target`` other than ``target``'s own model (column max)."""
    if target not in matrix.columns:
        raise ConfigError(f"target {target} is not a column of the matrix; it has {', '.join(matrix.columns)}")
    column = matrix[target].drop(index=target, errors="ignore").dropna()
    if column.empty:
        raise ConfigError(f"no source other than {target} was evaluated on {target}")
    return str(column.idxmax()), float(column.max())


def best_source(matrix: pd.DataFrame, target: str, sources: Iterable[str]) -> tuple[str, float]:
    """The best of ``sources`` on ``target``."""
    sources = list(sources)
    missing = [s for s in sources if s not in matrix.index]
    if missing:
        raise ConfigError(f"sources {', '.join(missing)} are not rows of the matrix")
    column = matrix.loc[sources, target].dropna()
    if column.empty:
        raise ConfigError(f"none of {', '.join(sources)} was evaluated on {target}")
    return str(column.idxmax()), float(column.max())
