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
import random
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from merginguriel_core.data import Examples
from merginguriel_core.errors import ConfigError, ModelError, TensorFileError, first_line
from merginguriel_core.io import TensorSource
from merginguriel_core.io.reader import read_header
from merginguriel_core.lazy import tqdm
from merginguriel_core.notes import note
from merginguriel_core.outputs import staged_file
from merginguriel_core.params import Param

if TYPE_CHECKING:
    import torch

    from merginguriel_core.interfaces import MergeContext
else:
    from merginguriel_core.lazy import torch


def default_stats_dir() -> Path:
    from merginguriel_core.outputs import cache_folder

    return cache_folder("statistics")


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
    from safetensors.torch import save_file  # imports torch

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
        first = first_line(exc)
        raise ModelError(f"cannot load {name_or_path}: {first}") from None


def load_classifier(model_dir: Path, device: torch.device):
    """A local sequence classifier and its tokenizer: safetensors only, no remote code. An
    adapter folder gives its base with the adapter merged in (peft's ``merge_and_unload``)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from merginguriel_core.adapters import is_adapter

    if is_adapter(model_dir):
        model, tokenizer = adapter_classifier(model_dir, device)
        return model.merge_and_unload(), tokenizer
    model = load_pretrained(AutoModelForSequenceClassification, model_dir, use_safetensors=True).to(device)
    return model, load_pretrained(AutoTokenizer, model_dir)


def adapter_classifier(model_dir: Path, device: torch.device, loaded: Any = None):
    """A LoRA adapter folder as a ``peft.PeftModel`` over its base, the adapter active, and
    its tokenizer (the folder's, else the base's).

    ``loaded`` (a model from an earlier call) on the same base is reused: the new adapter is
    read into it and switched to, the previous one dropped, so a run over K adapters holds one
    base model and reads it once."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from merginguriel_core.adapters import adapter_base

    try:
        import peft
    except ImportError:
        raise ModelError(f"{model_dir} is a LoRA adapter folder; reading it needs peft: "
                         f"pip install -e \".[adapters]\"") from None
    base = adapter_base(model_dir)
    folder = Path(model_dir)
    tokenizer_source = folder if (folder / "tokenizer_config.json").is_file() else base
    name = f"a{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]}"
    config = load_pretrained(AutoConfig, folder if (folder / "config.json").is_file() else base)
    if (isinstance(loaded, peft.PeftModel) and getattr(loaded, "merginguriel_base", None) == base
            and _labels(loaded.config) == _labels(config)):
        previous = loaded.active_adapter
        try:
            loaded.load_adapter(str(folder), adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"cannot load adapter {folder}: {first_line(exc)}") from None
        loaded.set_adapter(name)
        if previous != name:
            loaded.delete_adapter(previous)
        if loaded.merginguriel_tokenizer_source != tokenizer_source:  # the base's, or an adapter's own
            loaded.merginguriel_tokenizer = load_pretrained(AutoTokenizer, tokenizer_source)
            loaded.merginguriel_tokenizer_source = tokenizer_source
        return loaded, loaded.merginguriel_tokenizer
    model = load_pretrained(AutoModelForSequenceClassification, base, config=config, use_safetensors=True,
                            ignore_mismatched_sizes=True)
    try:
        model = peft.PeftModel.from_pretrained(model, str(folder), adapter_name=name).to(device)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot load adapter {folder}: {first_line(exc)}") from None
    model.merginguriel_base = base
    model.merginguriel_tokenizer = load_pretrained(AutoTokenizer, tokenizer_source)
    model.merginguriel_tokenizer_source = tokenizer_source
    return model, model.merginguriel_tokenizer


def _labels(config) -> list[str]:
    """A classifier config's labels in id order (what its logits' columns mean)."""
    return [str(label) for _, label in sorted((int(i), label) for i, label in (config.id2label or {}).items())]


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


# ------------------------------------------------ statistics of data-dependent strategies
def empirical_fisher(model_dir: Path, texts: list[str], labels: list[str], device: torch.device,
                     max_length: int, progress: bool) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: the mean over examples of (∂ log p(yₙ|xₙ)/∂θ)², per parameter.

    One example per backward pass (the Fisher needs per-example gradients); gold labels.
    """
    from merginguriel_core.data import Examples

    model, tokenizer = load_classifier(model_dir, device)
    model.eval()  # no dropout: the Fisher of the deterministic model
    ids = label_ids(model, Examples(texts, labels, str(model_dir)))
    from merginguriel_core.training import token_limit

    max_length = token_limit(model, max_length)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    for text, label in tqdm(list(zip(texts, ids)), desc=f"Fisher {model_dir.name}", disable=not progress, leave=False):
        model.zero_grad(set_to_none=True)
        batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=max_length).to(device)
        log_probs = torch.log_softmax(model(**batch).logits, dim=-1)
        (-log_probs[0, label]).backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach() ** 2
    return {name: f / len(texts) for name, f in fisher.items()}


def examples_param(what: str) -> Param:
    """The ``examples`` param of a data-dependent strategy: how many examples per model."""
    return Param("examples", int, 256, f"labelled examples per model for {what} (drawn with the run's seed)",
                 minimum=1)


@dataclass
class StatisticsFiles:
    """Open per-model statistics files for the merge pass."""

    readers: list[TensorSource]
    paths: list[Path]
    reused: list[bool]

    def rows(self, name: str, start: int, stop: int, scalar: bool, device: torch.device) -> list[torch.Tensor] | None:
        if not all(name in reader for reader in self.readers):
            return None
        read = (lambda r: r.get(name)) if scalar else (lambda r: r.get_rows(name, start, stop))
        return [read(r).to(device=device, dtype=torch.float32) for r in self.readers]

    def whole(self, name: str, device: torch.device) -> list[torch.Tensor] | None:
        return self.rows(name, 0, 0, True, device)

    def describe(self) -> list[dict[str, Any]]:
        """For merge_details.json: which statistics files were used, and whether reused."""
        return [{"file": str(p), "reused": r} for p, r in zip(self.paths, self.reused)]

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


def prepare_statistics(kind: str, context: "MergeContext", count: int, settings: Mapping[str, Any], compute) -> StatisticsFiles:
    """Compute (or reuse) one statistics file per source model, from ``count`` examples of
    its labelled data (``context.data``), and open them."""
    data = context.data
    paths, reused = [], []
    for source in context.sources:
        examples = sample(data.examples(source.locale), count, data.seed)
        path, was_cached = cached_statistics(
            kind, source.locale, source.path, examples, settings, data.stats_dir,
            lambda source=source, examples=examples: compute(source.path, examples),
        )
        paths.append(path)
        reused.append(was_cached)
    return StatisticsFiles([TensorSource(p) for p in paths], paths, reused)


def input_grams(model_dir: Path, texts: list[str], labels: list[str], device: torch.device, max_length: int,
                batch_size: int, progress: bool) -> dict[str, torch.Tensor]:
    """Per linear layer ``<module>.weight``: Σ xxᵀ / (number of tokens) over the layer's inputs.

    Padding positions are left out, using the attention mask of the current batch.
    """
    from merginguriel_core.data import Examples

    model, tokenizer = load_classifier(model_dir, device)
    model.eval()
    label_ids(model, Examples(texts, labels, str(model_dir)))  # same label space check as Fisher
    from merginguriel_core.training import token_limit

    max_length = token_limit(model, max_length)
    grams: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    current_mask: list[torch.Tensor] = []

    def hook(name: str):
        def record(module, inputs, output):
            x = inputs[0].detach()
            if x.dim() == 3:  # (batch, tokens, features): keep real tokens only
                x = x[current_mask[0].bool()]
            x = x.reshape(-1, x.shape[-1]).float()
            grams[name] = grams.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    handles = [module.register_forward_hook(hook(f"{name}.weight"))
               for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(texts), batch_size), desc=f"RegMean {model_dir.name}",
                              disable=not progress, leave=False):
                batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                                  truncation=True, max_length=max_length).to(device)
                current_mask[:] = [batch["attention_mask"]]
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: gram / counts[name] for name, gram in grams.items()}
