"""Evaluation: logits on a labelled split (cached on disk), metrics, the N×N zero-shot matrix
and the baselines derived from it.

The logits cache is keyed by the model's files (names, sizes, modification times, config),
the examples themselves (texts and labels), the label space and the token limit, so a
changed model or dataset never reuses a stale entry. Entries are ``.npz`` files (no pickle)
written to a temporary name in the same folder, fsync'd and renamed; an entry that cannot
be read (truncated, corrupted, wrong shape or dtype) is named in a note, removed and
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from merginguriel_core.data import Examples
from merginguriel_core.errors import ConfigError, ModelError, OutputError, first_line
from merginguriel_core.interfaces import Dataset, Evaluator
from merginguriel_core.lazy import tqdm
from merginguriel_core.notes import note, note_once
from merginguriel_core.outputs import atomic_file

if TYPE_CHECKING:  # imported where used: pandas costs every `mu` call ~0.5 s
    import numpy as np
    import pandas as pd
    import torch
else:
    from merginguriel_core.lazy import numpy as np, torch


def default_cache_dir() -> Path:
    from merginguriel_core.outputs import cache_folder

    return cache_folder("logits")


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
    from merginguriel_core.adapters import ADAPTER_CONFIG, adapter_base, is_adapter

    if is_adapter(model_dir):  # an adapter's logits also depend on its config and its base
        digest.update((model_dir / ADAPTER_CONFIG).read_bytes())
        digest.update(model_fingerprint(adapter_base(model_dir)).encode())
    return digest.hexdigest()[:24]


def examples_fingerprint(examples: Examples) -> str:
    digest = hashlib.sha256()
    for text, label in zip(examples.texts, examples.labels):
        digest.update(text.encode() + b"\x00" + label.encode() + b"\x01")
    return digest.hexdigest()[:24]


def model_labels(model_dir: Path) -> list[str]:
    """The model's labels in id order, from its config.json (an adapter folder without one:
    its base's)."""
    from merginguriel_core.adapters import adapter_base, is_adapter

    config = model_dir / "config.json"
    if not config.is_file() and is_adapter(model_dir):
        config = adapter_base(model_dir) / "config.json"
    if not config.is_file():
        raise ModelError(f"{model_dir} has no config.json")
    id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def _preview(labels: list[str], shown: int = 8) -> str:
    """``a, b, c`` or ``a, b, ... (60 in all)`` for one-line messages."""
    if len(labels) <= shown:
        return ", ".join(labels) or "none"
    return f"{', '.join(labels[:shown])}, ... ({len(labels)} in all)"


def label_space_for(dataset: Dataset, location: str | None, model_dirs: Iterable[Path]) -> list[str]:
    """The label order in which ``model_dirs`` are evaluated on ``dataset`` at ``location``.

    A dataset with a fixed label order (``fixed_label_order``, the default) gives that order,
    and each model must predict exactly it (:func:`check_label_space`). A dataset whose labels
    are only a set read from the data (a local table, whose ``labels`` are sorted) is evaluated
    in the models' own ``id2label`` order instead: the models must all share it, and every
    label of the data must be one of theirs; otherwise a one-line :class:`ConfigError` names
    both orders (or both label sets).
    """
    data_labels = dataset.labels(location)
    dirs = list(model_dirs)
    if getattr(dataset, "fixed_label_order", True) or not dirs:
        return data_labels
    first, order = dirs[0], model_labels(dirs[0])
    for other in dirs[1:]:
        labels = model_labels(other)
        if labels != order:
            raise ConfigError(
                f"models {first} ({_preview(order)}) and {other} ({_preview(labels)}) have different labels or "
                f"label orders; dataset {dataset.name!r} takes its label order from the models, so they must share "
                f"id2label"
            )
    known = set(order)
    missing = [label for label in data_labels if label not in known]
    if missing:
        raise ConfigError(
            f"the data {location} has labels {_preview(data_labels)} but model {first} has {_preview(order)}; "
            f"not the model's: {_preview(missing, 5)}"
        )
    return order


def check_label_space(model_dir: Path, label_space: list[str]) -> None:
    """The model must predict exactly the dataset's labels, in the same id order."""
    labels = model_labels(model_dir)
    if labels != label_space:
        differ = next((i for i, (a, b) in enumerate(zip(labels, label_space)) if a != b), min(len(labels), len(label_space)))
        raise ConfigError(
            f"model {model_dir} has labels {len(labels)} ({', '.join(labels[:4])}...) but the dataset has "
            f"{len(label_space)} ({', '.join(label_space[:4])}...); they first differ at id {differ}"
        )


def check_batching(batch_size: int, max_length: int) -> None:
    """Reject a ``--batch-size`` below 1 or a ``--max-length`` below 2 (the two special tokens),
    before any model loads; shared by every command that runs a model."""
    for option, value, least in (("--batch-size", batch_size, 1), ("--max-length", max_length, 2)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{option} must be a whole number, got {value!r}")
        if value < least:
            raise ConfigError(f"{option} must be at least {least}, got {value}")


#: What reading a damaged cache entry can raise (truncated or garbage zip, bad member, I/O).
CACHE_READ_ERRORS = (zipfile.BadZipFile, zlib.error, pickle.UnpicklingError, OSError, ValueError, KeyError, EOFError)


def _read_logits(path: Path) -> np.ndarray:
    """The ``logits`` array of one cache entry (raises one of :data:`CACHE_READ_ERRORS`)."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError("not an .npz archive")
    with loaded:
        return loaded["logits"]


def _logits_problem(logits: np.ndarray, shape: tuple[int, ...] | None) -> str | None:
    """Why ``logits`` read from the cache cannot be used (wrong dtype or shape), or ``None``."""
    if logits.dtype != np.float32:
        return f"dtype {logits.dtype}, expected float32"
    if logits.ndim != 2 or (shape is not None and logits.shape != tuple(shape)):
        return f"shape {logits.shape}, expected {tuple(shape) if shape is not None else '(examples, labels)'}"
    return None


class LogitsCache:
    """Logits of (model, examples) pairs on disk; ``None`` root disables caching."""

    def __init__(self, root: Path | None):
        self.root = root

    def key(self, model_dir: Path, examples: Examples, label_space: list[str], max_length: int) -> str:
        raw = json.dumps([model_fingerprint(model_dir), examples_fingerprint(examples), label_space, max_length])
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        """The entry's file (only meaningful with a root)."""
        return Path(self.root) / f"{key}.npz"

    def get(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """The cached logits, or ``None`` when absent.

        An entry that cannot be read, or is not float32 of ``shape`` (examples, labels), is
        named in a note and removed, and ``None`` is returned so the caller recomputes it.
        """
        if self.root is None:
            return None
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            logits = _read_logits(path)
            problem = _logits_problem(logits, shape)
        except CACHE_READ_ERRORS as exc:
            problem = f"{type(exc).__name__}: {first_line(exc, 'unreadable')}"
        if problem is None:
            return logits
        note(f"logits cache file {path} is unreadable ({problem}); removed it, recomputing")
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # the put that follows replaces it
        return None

    def put(self, key: str, logits: np.ndarray) -> None:
        """Store ``logits`` atomically: a temporary file in the same folder, fsync'd, then renamed.

        A cache that cannot be written (read-only folder, full disk) is said in a note, once
        per folder; the logits are still returned to the caller, only not cached.
        """
        if self.root is None:
            return
        final = self.path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(final, "wb") as handle:
                np.savez(handle, logits=np.asarray(logits, dtype=np.float32))
        except (OSError, OutputError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            note_once(f"cannot write the logits cache in {final.parent} ({reason}); logits are computed but not cached",
                      key=f"logits cache {final.parent}")


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
    #: How many times an adapter's base model was read (adapters on one base share one).
    base_loads: int = 0
    _loaded: tuple[Path, Any, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_batching(self.batch_size, self.max_length)

    def cached(self, model_dir: Path, examples: Examples, label_space: list[str]) -> bool:
        """Whether :meth:`logits` would read these logits from the cache (no forward pass)."""
        if self.cache.root is None:
            return False
        return self.cache.path(self.cache.key(model_dir, examples, label_space, self.max_length)).is_file()

    def logits(self, model_dir: Path, examples: Examples, label_space: list[str]) -> np.ndarray:
        check_label_space(model_dir, label_space)
        key = self.cache.key(model_dir, examples, label_space, self.max_length)
        cached = self.cache.get(key, (len(examples), len(label_space)))
        if cached is not None:
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
        """The model of ``model_dir``, loaded once in a row. Adapter folders on one base share
        one base model: the next adapter is switched in (see
        :func:`~merginguriel_core.statistics.adapter_classifier`)."""
        if self._loaded is None or self._loaded[0] != model_dir:
            from merginguriel_core.adapters import is_adapter
            from merginguriel_core.statistics import adapter_classifier, load_classifier

            previous = self._loaded[1] if self._loaded is not None else None
            self._loaded = None
            if is_adapter(model_dir):
                model, tokenizer = adapter_classifier(model_dir, self.device, previous)
                self.base_loads += 0 if model is previous else 1
            else:
                del previous
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
               evaluators: list[Evaluator], predictor: Predictor, progress: bool = False) -> NxN:
    """Evaluate every source model on every target's split (labels in :func:`label_space_for`'s order).

    ``progress`` shows one bar over all cells (done / total, ETA) naming the current one;
    give it a ``predictor`` without progress, so that no bar per cell is drawn under it.
    """
    import pandas as pd

    label_space = label_space_for(dataset, location, models.values())
    data = {target: dataset.load(location, target, split) for target in targets}
    gold = {target: gold_ids(examples, label_space) for target, examples in data.items()}
    values: dict[str, dict[str, dict[str, float]]] = {}
    seconds = {}
    with tqdm(total=len(models) * len(targets), desc="N×N", unit="cell", disable=not progress) as bar:
        for source, model_dir in models.items():
            for target in targets:
                bar.set_postfix_str(f"{source} → {target}")
                started = time.perf_counter()
                logits = predictor.logits(model_dir, data[target], label_space)
                metrics = score(logits.argmax(-1), gold[target], len(label_space), evaluators)
                seconds[(source, target)] = time.perf_counter() - started
                for metric, value in metrics.items():
                    values.setdefault(metric, {}).setdefault(source, {})[target] = value
                bar.update()
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
