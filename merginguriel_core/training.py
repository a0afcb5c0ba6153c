"""Fine-tuning one pre-trained encoder per language: a lean, reproducible training loop.

Each run writes into a temporary folder beside its output and renames it into place at the
end, with ``training_details.json`` as the mark of a finished model, so an interrupted
batch resumes by skipping the locales that are done.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from merginguriel_core.data import Examples
from merginguriel_core.errors import ConfigError
from merginguriel_core.interfaces import Dataset
from merginguriel_core.lazy import tqdm
from merginguriel_core.outputs import check_output_path, staged_folder

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    from merginguriel_core.lazy import numpy as np, torch

DETAILS = "training_details.json"


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one fine-tuning run."""

    epochs: float = 3.0
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 96
    seed: int = 0
    freeze_embeddings: bool = False
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_train_examples: int | None = None
    #: Batch examples of similar length together (``--group-by-length``; less padding).
    group_by_length: bool = True

    def check(self) -> None:
        if self.epochs <= 0:
            raise ConfigError(f"--epochs must be positive, got {self.epochs}")
        if self.learning_rate <= 0:
            raise ConfigError(f"--learning-rate must be positive, got {self.learning_rate}")
        from merginguriel_core.evaluation import check_batching

        check_batching(self.batch_size, self.max_length)
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ConfigError(f"--max-train-examples must be at least 1, got {self.max_train_examples}")


@dataclass(frozen=True)
class AdapterTraining:
    """Train a LoRA adapter (peft) and the classifier head instead of the whole model
    (``mu train --adapter lora``): rank ``rank``, scale ``alpha / rank``, on the modules
    named ``targets`` (``query``, ``value``: the attention projections of BERT-style encoders)."""

    kind: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("query", "value")

    def check(self) -> None:
        if self.kind != "lora":
            raise ConfigError(f"unknown --adapter {self.kind!r}; allowed: lora")
        if self.rank < 1:
            raise ConfigError(f"--lora-rank must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"--lora-alpha must be positive, got {self.alpha}")
        if not self.targets:
            raise ConfigError("--lora-targets names no module; e.g. --lora-targets query,value")
        try:
            import peft  # noqa: F401
        except ImportError:
            raise ConfigError("--adapter lora needs peft: pip install -e \".[adapters]\"") from None

    def wrap(self, model):
        """``model`` with LoRA adapters on ``targets`` and its head trained whole (peft)."""
        import peft

        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [target for target in self.targets if target not in names]
        if missing:
            raise ConfigError(f"--lora-targets {missing[0]} is no module of the base model; "
                              f"e.g. query, key, value, dense")
        # Trained whole besides the adapter: the head (peft's SEQ_CLS task adds it) and every
        # module the base checkpoint lacks (so the adapter folder holds all it changed).
        # A fresh module that is also a LoRA target (the pooler's `dense`) is saved whole too.
        fresh = [name for name in getattr(model, "merginguriel_new_modules", ())
                 if not {"classifier", "score"} & set(name.split("."))]  # the head: peft's own
        config = peft.LoraConfig(task_type="SEQ_CLS", r=self.rank, lora_alpha=self.alpha,
                                 target_modules=list(self.targets), lora_dropout=0.0,
                                 modules_to_save=fresh or None)
        return peft.get_peft_model(model, config)


def is_finished(folder: Path) -> bool:
    """A model folder that a completed ``mu train`` wrote."""
    return (folder / DETAILS).is_file() and any(folder.glob("*.safetensors"))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def label_ids(labels: list[str], examples: Examples, label_space: list[str]) -> torch.Tensor:
    index = {label: i for i, label in enumerate(label_space)}
    unknown = sorted({label for label in labels if label not in index})
    if unknown:
        raise ConfigError(
            f"labels {', '.join(unknown[:5])} in {examples.source} are not in the dataset's label space "
            f"({', '.join(label_space[:10])}{' ...' if len(label_space) > 10 else ''})"
        )
    return torch.tensor([index[label] for label in labels])


def token_limit(model, requested: int) -> int:
    """``requested``, capped by the model's position embeddings (RoBERTa-style models offset
    positions by the padding index, so two positions are unusable)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    return min(requested, positions - 2) if positions else requested


def predict_logits(model, tokenizer, texts: list[str], batch_size: int, max_length: int,
                   device: torch.device, progress: bool = False, desc: str = "predicting") -> np.ndarray:
    """Logits (N, C) of ``model`` on ``texts``, in batches, without gradients.

    The texts are tokenised once and batched longest first, so each batch pads to lengths
    alike (a batch costs its longest member); the rows come back in the order of ``texts``.
    """
    model.eval()
    if not texts:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    encoded = tokenizer(list(texts), truncation=True, max_length=token_limit(model, max_length))
    order = sorted(range(len(texts)), key=lambda i: -len(encoded["input_ids"][i]))
    outputs = np.empty((len(texts), model.config.num_labels), dtype=np.float32)
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
            rows = order[start:start + batch_size]
            batch = _padded(tokenizer, encoded, rows).to(device)
            outputs[rows] = model(**batch).logits.float().cpu().numpy()
    return outputs


def _padded(tokenizer, encoded, rows: list[int]):
    """The tokenised ``rows`` of ``encoded`` as one batch, padded to its longest member."""
    features = [{key: encoded[key][i] for key in encoded.keys()} for i in rows]
    return tokenizer.pad(features, return_tensors="pt")


def length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator,
                           group_factor: int = 50) -> list[list[int]]:
    """One epoch's batches of indices: shuffled, then sorted by length within groups of
    ``group_factor`` batches, so that a batch holds examples of similar length and pads
    little; the batches come in random order. Every index appears exactly once."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    group = batch_size * group_factor
    batches = []
    for start in range(0, len(order), group):
        ordered = sorted(order[start:start + group], key=lambda i: -lengths[i])
        batches += [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def train_one(
    dataset: Dataset,
    location: str | None,
    locale: str,
    base_model: str,
    output: Path,
    config: TrainingConfig,
    device: torch.device,
    progress: bool = True,
    overwrite: bool = False,
    adapter: AdapterTraining | None = None,
) -> dict[str, Any]:
    """Fine-tune ``base_model`` on ``locale``'s train split; evaluate on dev; save atomically.

    With ``adapter``, only a LoRA adapter and the head are trained, and the folder is a peft
    adapter folder (``adapter_config.json``, ``adapter_model.safetensors``) plus the
    classifier's ``config.json`` (its labels); the tokenizer is the base's.

    ``output`` is locked from the start (a second run to it fails at once) and placed only
    when the model is saved; an existing folder is replaced only with ``overwrite``, and
    never when it is the base model or holds or lies inside it or the data.
    """
    config.check()
    if adapter is not None:
        adapter.check()
    check_output_path(output, [Path(base_model), location])
    with staged_folder(output, overwrite=overwrite, what="fine-tuned model") as staging:
        model, tokenizer, details = _train(dataset, location, locale, base_model, config, device, progress, adapter)
        _save(model, tokenizer, details, staging)
    return details


def _train(dataset: Dataset, location: str | None, locale: str, base_model: str, config: TrainingConfig,
           device: torch.device, progress: bool, adapter: AdapterTraining | None = None
           ) -> tuple[Any, Any, dict[str, Any]]:
    """The training run of :func:`train_one`: returns the model, its tokenizer and the details."""
    started = time.perf_counter()
    splits = _load_splits(dataset, location, locale, config)
    _seed_everything(config.seed)
    model, tokenizer = _load_model(base_model, splits.label_space, device)
    if adapter is not None:
        model = adapter.wrap(model)
    steps, losses = _fit(model, tokenizer, splits, config, device, locale, progress)
    dev_accuracy = _dev_accuracy(model, tokenizer, splits, config, device)
    details = {
        "dataset": dataset.name,
        "data": location or dataset.hub_id,
        "locale": locale,
        "base_model": base_model,
        "labels": splits.label_space,
        "train_examples": len(splits.train.texts),
        "dev_examples": len(splits.dev.texts),
        "steps": steps,
        "final_train_loss": float(np.mean(losses[-20:])) if losses else None,
        "dev_accuracy": dev_accuracy,
        "seconds": round(time.perf_counter() - started, 1),
        "device": str(device),
        "config": asdict(config),
    }
    if adapter is not None:
        details["adapter"] = {**asdict(adapter), "trainable_parameters": sum(
            p.numel() for p in model.parameters() if p.requires_grad)}
    return model, tokenizer, details


class _Splits(NamedTuple):
    """The train and dev examples of one run, their labels as ids, and the label space."""

    label_space: list[str]
    train: Examples
    dev: Examples
    train_labels: torch.Tensor
    dev_labels: torch.Tensor


def _load_splits(dataset: Dataset, location: str | None, locale: str, config: TrainingConfig) -> _Splits:
    """``locale``'s train (cut to ``max_train_examples``) and dev splits, labels checked."""
    label_space = dataset.labels(location)
    train = dataset.load(location, locale, "train")
    dev = dataset.load(location, locale, "dev")
    if config.max_train_examples is not None:
        train = Examples(train.texts[: config.max_train_examples], train.labels[: config.max_train_examples], train.source)
    return _Splits(label_space, train, dev, label_ids(train.labels, train, label_space),
                   label_ids(dev.labels, dev, label_space))


def _load_model(base_model: str, label_space: list[str], device: torch.device) -> tuple[Any, Any]:
    """``base_model`` with a new classification head over ``label_space``, on ``device``, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from merginguriel_core.statistics import load_pretrained

    tokenizer = load_pretrained(AutoTokenizer, base_model)
    model, info = load_pretrained(
        AutoModelForSequenceClassification,
        base_model,
        num_labels=len(label_space),
        id2label=dict(enumerate(label_space)),
        label2id={label: i for i, label in enumerate(label_space)},
        use_safetensors=True,
        ignore_mismatched_sizes=True,  # a base that is itself a classifier of other labels gets a new head
        output_loading_info=True,
    )
    # The modules the checkpoint lacks were initialised here (the head; a pooler an encoder-only
    # checkpoint has not): an adapter must train and save them, or they are lost with the run.
    fresh = [key if isinstance(key, str) else key[0] for key in
             [*(info.get("missing_keys") or ()), *(info.get("mismatched_keys") or ())]]
    model.merginguriel_new_modules = sorted({key.rsplit(".", 1)[0] for key in fresh if "." in key})
    return model.to(device), tokenizer


def _fit(model, tokenizer, splits: _Splits, config: TrainingConfig, device: torch.device, locale: str,
         progress: bool) -> tuple[int, list[float]]:
    """The optimisation loop of one run (see :class:`FineTuning`); returns the steps taken
    and the loss of each."""
    run = FineTuning(model, tokenizer, splits, config, device)
    with tqdm(total=run.total_steps, desc=f"training {locale}", disable=not progress, leave=False) as bar:
        while not run.finished:
            run.epoch(bar)
    return run.step, run.losses


class FineTuning:
    """One model's optimisation, an epoch at a time: AdamW, linear warm-up and decay over
    ``config.epochs`` passes, clipped gradients, a seeded shuffle each epoch, batches grouped
    by length unless ``config.group_by_length`` is off.

    ``mu train`` runs its epochs back to back; iterative training
    (:mod:`merginguriel_core.iterative`) runs one epoch of each model in turn, merging
    between them, and saves and restores the optimiser, the schedule and the shuffle with
    :meth:`state`/:meth:`restore`, so that a resumed run continues exactly.
    """

    def __init__(self, model, tokenizer, splits: _Splits, config: TrainingConfig, device: torch.device):
        from transformers import get_linear_schedule_with_warmup

        self.model, self.tokenizer, self.splits, self.config, self.device = model, tokenizer, splits, config, device
        if config.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.steps_per_epoch = max(1, -(-len(splits.train.texts) // config.batch_size))
        self.total_steps = max(1, round(self.steps_per_epoch * config.epochs))
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(config.warmup_ratio * self.total_steps),
                                                         self.total_steps)
        self.generator = torch.Generator().manual_seed(config.seed)
        max_length = token_limit(model, config.max_length)
        self.encoded = tokenizer(list(splits.train.texts), truncation=True, max_length=max_length)  # once
        self.lengths = [len(ids) for ids in self.encoded["input_ids"]]
        self.step, self.losses = 0, []

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def _batches(self) -> list[list[int]]:
        if self.config.group_by_length:
            return length_grouped_batches(self.lengths, self.config.batch_size, self.generator)
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        return [order[i:i + self.config.batch_size] for i in range(0, len(order), self.config.batch_size)]

    def epoch(self, bar=None) -> list[float]:
        """One pass over the training split (cut short at the last step); its losses."""
        model, labels, device = self.model, self.splits.train_labels, self.device
        model.train()
        losses = []
        for indices in self._batches():
            if self.finished:
                break
            batch = _padded(self.tokenizer, self.encoded, indices).to(device)
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels[indices].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            self.step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean((self.losses + losses)[-20:]):.3f}")
        self.losses += losses
        return losses

    def dev_accuracy(self) -> float:
        """Accuracy on the dev split (the model is left in eval mode)."""
        return _dev_accuracy(self.model, self.tokenizer, self.splits, self.config, self.device)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, facts)``: the optimiser's moments and the shuffle's generator as tensors
        (for a safetensors file), the step, losses, schedule and optimiser settings as JSON."""
        optimizer = self.optimizer.state_dict()
        tensors = {"generator": self.generator.get_state()}
        scalars: dict[str, dict[str, Any]] = {}
        for index, values in optimizer["state"].items():
            for name, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(index), {})[name] = value
        facts = {"step": self.step, "losses": self.losses, "param_groups": optimizer["param_groups"],
                 "optimizer_scalars": scalars, "scheduler": self.scheduler.state_dict()}
        return tensors, facts

    def restore(self, tensors: dict[str, torch.Tensor], facts: dict[str, Any]) -> None:
        """Continue from what :meth:`state` returned."""
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value.to(self.device) if value.ndim else value
        for index, values in facts.get("optimizer_scalars", {}).items():
            state.setdefault(int(index), {}).update(values)
        self.optimizer.load_state_dict({"state": state, "param_groups": facts["param_groups"]})
        self.scheduler.load_state_dict(facts["scheduler"])
        self.generator.set_state(tensors["generator"])
        self.step, self.losses = int(facts["step"]), list(facts["losses"])


def _dev_accuracy(model, tokenizer, splits: _Splits, config: TrainingConfig, device: torch.device) -> float:
    """The model's accuracy on the dev split (NaN for an empty one); leaves it in eval mode."""
    logits = predict_logits(model, tokenizer, splits.dev.texts, 64, config.max_length, device)
    return float(np.mean(logits.argmax(-1) == splits.dev_labels.numpy())) if len(logits) else float("nan")


def _save(model, tokenizer, details: dict[str, Any], folder: Path) -> None:
    """Write the model (safetensors), its tokenizer and ``training_details.json`` into ``folder``.
    An adapter folder holds the adapter and the classifier's config (for its labels), not the
    tokenizer: that is its base model's, read from there."""
    model.save_pretrained(folder, safe_serialization=True)
    if hasattr(model, "peft_config"):
        model.get_base_model().config.save_pretrained(folder)
    else:
        tokenizer.save_pretrained(folder)
    (folder / DETAILS).write_text(json.dumps(details, indent=2) + "\n", encoding="utf-8")
