"""Per-model statistics (Fisher information, Gram matrices) computed once, stored, reused.

Statistics files are safetensors in a cache folder (``--stats-dir``, default
``$XDG_CACHE_HOME/merginguriel/statistics``), named by a key over everything that decides
their values: the kind, the model files (name, size, modification time), the examples, the
number of examples, the seed and the kind's own settings. A changed model or dataset gets a
new file; an unchanged one is read back instead of recomputed. Files are written to a
temporary name and renamed, so an interrupted computation leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import save_file

from merginguriel_core.data import Examples
from merginguriel_core.errors import ConfigError, ModelError, TensorFileError
from merginguriel_core.io.reader import read_header
from merginguriel_core.notes import note
from merginguriel_core.outputs import staged_file


def default_stats_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "merginguriel" / "statistics"


def sample(examples: Examples, count: int, seed: int) -> Examples:
    """``count`` examples drawn without replacement with ``seed`` (all of them if fewer)."""
    if count < 1:
        raise ConfigError(f"the number of examples for statistics must be at least 1, got {count}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    chosen = order[:count]
    return Examples([examples.texts[i] for i in chosen], [examples.labels[i] for i in chosen], examples.source)


def statistics_key(kind: str, model_dir: Path, examples: Examples, settings: Mapping[str, Any]) -> str:
    """A hash of everything that decides a statistics file's contents."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, "settings": dict(settings)}, sort_keys=True, default=str).encode())
    for file in sorted(model_dir.iterdir()):
        if file.is_file() and (file.suffix == ".safetensors" or file.name.endswith(".json")):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for text, label in zip(examples.texts, examples.labels):
        digest.update(text.encode())
        digest.update(b"\x00")
        digest.update(label.encode())
        digest.update(b"\x01")
    return digest.hexdigest()[:20]


def cached_statistics(
    kind: str,
    locale: str,
    model_dir: Path,
    examples: Examples,
    settings: Mapping[str, Any],
    stats_dir: Path,
    compute: Callable[[], dict[str, torch.Tensor]],
) -> tuple[Path, bool]:
    """The path of the statistics file, computing and storing it first if missing.

    Returns ``(path, reused)``.
    """
    stats_dir.mkdir(parents=True, exist_ok=True)
    path = stats_dir / f"{kind}-{locale}-{statistics_key(kind, model_dir, examples, settings)}.safetensors"
    if path.is_file():
        try:
            read_header(path)  # a truncated or damaged file is recomputed, not used
            return path, True
        except TensorFileError as exc:
            note(f"statistics file {path} is unreadable ({exc}); removed it, recomputing")
            path.unlink(missing_ok=True)
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in compute().items()}
    with staged_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={"kind": kind, "model": str(model_dir), "examples": str(len(examples)),
                                               "data": examples.source})
    return path, False


def load_pretrained(loader, name_or_path: str | Path, **kwargs):
    """``loader.from_pretrained`` (safetensors only, no remote code) with a one-line error
    when the model cannot be found or fetched."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load {name_or_path}: {first}") from None


def load_classifier(model_dir: Path, device: torch.device):
    """A local sequence classifier and its tokenizer: safetensors only, no remote code."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = load_pretrained(AutoModelForSequenceClassification, model_dir, use_safetensors=True).to(device)
    return model, load_pretrained(AutoTokenizer, model_dir)


def label_ids(model, examples: Examples) -> list[int]:
    """Map label names to the model's ids (its ``config.label2id``); unknown names are an error."""
    mapping = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}
    missing = sorted({label for label in examples.labels if label not in mapping})
    if missing:
        raise ConfigError(
            f"labels {', '.join(missing[:5])} of {examples.source} are not in the model's label space "
            f"({', '.join(sorted(mapping)) or 'none'})"
        )
    return [mapping[label] for label in examples.labels]
