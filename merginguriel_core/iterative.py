"""Iterative training with periodic merges: several source-language models trained from one
base, merged every few epochs, each continuing from the merge; the last merge is the model
for the target language.

:func:`plan_iterative` resolves and checks everything once (every independent problem
reported together) into a frozen :class:`IterativePlan`; :func:`run_iterative` only reads
it. ``mu train-iterative`` and the experiment runner's ``iterative:`` cells go through here.

A run, epoch by epoch::

    every model trains one epoch (one after another, or in parallel worker processes)
    → its dev accuracy and loss are logged
    → at a merge point: every model is checkpointed (its weights, optimiser, schedule and
      random state), the checkpoints are merged in memory by any strategy and weighting
      (plan_merge + merge_state_dict, as ``mu merge`` would merge them), the merge is
      scored on the target's dev split (logged only, never used to decide anything), and
      each model continues from ``mix * merge + (1 - mix) * its own weights``.

Merge points: every ``merge_frequency`` epochs and after the last one; with
``adaptive_merge_frequency`` the interval follows the training loss (AdaComm, Wang & Joshi
2019: ``ceil(merge_frequency * sqrt(loss / first_loss))``, so the models are merged more
often as they converge); with ``performance_merge_trigger`` a merge also happens after an
epoch in which the models' mean dev accuracy rose by less than ``convergence_threshold``.

The run folder holds ``iterative.json`` (the configuration and where the run is),
``log.jsonl`` (one line per epoch and per merge, as they happen), ``checkpoints/epoch-E/``
(the last checkpoint only) and, at the end, ``result.json`` and ``model/`` (the final merge).
A killed run continues from its last checkpoint with ``resume``, and gives the same final
weights as a run that was never interrupted; a checkpoint of another configuration is
refused, naming the difference.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from merginguriel_core.errors import ConfigError, MergingUrielError
from merginguriel_core.notes import note
from merginguriel_core.outputs import OutputLock, format_bytes, write_json_atomically
from merginguriel_core.training import TrainingConfig

if TYPE_CHECKING:
    import torch

    from merginguriel_core.interfaces import Dataset, MergeStrategy
    from merginguriel_core.selection import Selection, SelectionOptions

__all__ = ["IterativeOptions", "IterativePlan", "IterativeResult", "plan_iterative", "run_iterative"]

STATE_FILE = "iterative.json"
LOG_FILE = "log.jsonl"
RESULT_FILE = "result.json"
CHECKPOINTS = "checkpoints"
MODEL = "model"
#: A member's optimiser, schedule and random state, in a folder of its checkpoint (so that a
#: merge, which copies the first source's side files, does not copy them).
_MEMBER_STATE = "training_state"
_MEMBER_TENSORS = f"{_MEMBER_STATE}/state.safetensors"
_MEMBER_FACTS = f"{_MEMBER_STATE}/state.json"
_RUN_FACTS = "run_state.json"


@dataclass(frozen=True)
class IterativeOptions:
    """When to merge and how the models continue from a merge."""

    #: Epochs every model trains in all (the schedule's length: warm-up and decay span them).
    max_epochs: int = 15
    #: Epochs between merges (the first interval with ``adaptive_merge_frequency``).
    merge_frequency: int = 3
    #: Each model continues from ``mix * merge + (1 - mix) * its own weights``.
    merge_mix: float = 1.0
    #: Merge more often as the training loss falls (AdaComm's rule; see the module docstring).
    adaptive_merge_frequency: bool = False
    #: Also merge after an epoch in which the mean dev accuracy rose by less than the threshold.
    performance_merge_trigger: bool = False
    #: The smallest rise of the mean dev accuracy (0..1) that counts as progress.
    convergence_threshold: float = 0.01
    #: Train the models of an epoch in parallel worker processes when memory allows.
    parallel: bool = False

    def check(self) -> None:
        """Every range and combination; all problems at once."""
        problems = self.problems()
        if len(problems) == 1:
            raise ConfigError(problems[0])
        if problems:
            raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))

    def problems(self) -> list[str]:
        """What is wrong with these options, one line each."""
        problems = []
        if self.max_epochs < 1:
            problems.append(f"--max-epochs must be at least 1, got {self.max_epochs}")
        if self.merge_frequency < 1:
            problems.append(f"--merge-frequency must be at least 1, got {self.merge_frequency}")
        elif self.max_epochs >= 1 and self.merge_frequency > self.max_epochs:
            problems.append(f"--merge-frequency {self.merge_frequency} is larger than --max-epochs {self.max_epochs}: "
                            f"no merge would happen before the end; use at most {self.max_epochs}")
        if not (0 < self.merge_mix <= 1) or math.isnan(self.merge_mix):
            problems.append(f"--merge-mix must be in (0, 1] (1: continue from the merge), got {self.merge_mix}")
        if not (0 <= self.convergence_threshold < 1) or math.isnan(self.convergence_threshold):
            problems.append(f"--convergence-threshold must be in [0, 1) (a rise of dev accuracy), "
                            f"got {self.convergence_threshold}")
        return problems


@dataclass(frozen=True)
class IterativePlan:
    """An iterative training run, resolved and checked: what :func:`run_iterative` does."""

    #: The run folder (checkpoints, log, result, final model).
    output: Path
    target: str
    #: ``(locale, weight)`` of every model trained, weights summing to 1 (the merges' weights).
    sources: tuple[tuple[str, float], ...]
    strategy: "MergeStrategy"
    params: Mapping[str, Any]
    base_model: Path
    dataset: "Dataset"
    location: str | None
    label_space: tuple[str, ...]
    training: TrainingConfig
    options: IterativeOptions
    device: "torch.device"
    #: The target's split the final model is scored on (``None``: not scored).
    eval_split: str | None = "test"
    evaluators: tuple[Any, ...] = ()
    #: Token limit and batch size of scoring the merges (default: the training's limit).
    eval_max_length: int | None = None
    eval_batch_size: int = 64
    #: Write the final merge to ``output/model`` (the experiment runner writes it only with --keep-models).
    keep_model: bool = True
    keep_checkpoints: bool = False
    selection: "Selection | None" = None
    registry: Any = None
    progress: bool = True
    #: Statistics of data-dependent strategies (fisher, regmean) go here.
    stats_dir: Path | None = None

    @property
    def weighting(self) -> str:
        return self.selection.weighting if self.selection is not None else "given"

    def config(self) -> dict[str, Any]:
        """What decides the run's numbers: a resumed run must match it exactly."""
        return json.loads(json.dumps({
            "target": self.target, "sources": [[locale, weight] for locale, weight in self.sources],
            "strategy": self.strategy.name, "params": dict(self.params), "weighting": self.weighting,
            "base_model": str(self.base_model), "dataset": self.dataset.name, "data": self.location,
            "labels": list(self.label_space), "training": {k: v for k, v in asdict(self.training).items() if k != "epochs"},
            "max_epochs": self.options.max_epochs, "merge_frequency": self.options.merge_frequency,
            "merge_mix": self.options.merge_mix, "adaptive_merge_frequency": self.options.adaptive_merge_frequency,
            "performance_merge_trigger": self.options.performance_merge_trigger,
            "convergence_threshold": self.options.convergence_threshold,
        }, default=str))


@dataclass
class IterativeResult:
    """What :func:`run_iterative` returns (and writes to ``result.json``)."""

    target: str
    sources: list[list[Any]]
    #: Metrics of the final merge on the target's ``eval_split`` (empty when not scored).
    metrics: dict[str, float]
    eval_split: str | None
    examples: int
    #: One entry per epoch: ``{"epoch", "models": {locale: {"train_loss", "dev_accuracy", "seconds"}}, ...}``.
    epochs: list[dict[str, Any]]
    #: One entry per merge: ``{"epoch", "reason", "target_dev_accuracy", "seconds", ...}``.
    merges: list[dict[str, Any]]
    #: One entry per cycle (the epochs up to and including a merge): wall time and peak memory.
    cycles: list[dict[str, Any]]
    steps_per_model: int
    seconds: float
    resumed_from: list[int] = field(default_factory=list)
    model_folder: str | None = None

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


# ------------------------------------------------------------------------------ planning
def plan_iterative(
    output: str | Path,
    *,
    target: str,
    locales: Iterable[str] | None = None,
    selection: "SelectionOptions | Selection | None" = None,
    strategy: Any = "linear",
    params: Mapping[str, Any] | None = None,
    base_model: str | Path,
    dataset: Any = "sib200",
    data_dir: str | Path | None = None,
    data_file: str | Path | None = None,
    training: TrainingConfig | None = None,
    options: IterativeOptions | None = None,
    device: str = "auto",
    eval_split: str | None = "test",
    evaluators: Iterable[Any] | None = None,
    eval_max_length: int | None = None,
    eval_batch_size: int = 64,
    keep_model: bool = True,
    keep_checkpoints: bool = False,
    stats_dir: str | Path | None = None,
    progress: bool = True,
    registry: Any = None,
) -> IterativePlan:
    """Resolve and check an iterative run; return its frozen plan for :func:`run_iterative`.

    The models trained are ``locales`` (weighted by ``selection``'s weighting over them), or
    the sources ``selection`` chooses among every language of ``dataset`` with training
    data (as ``mu merge`` chooses among models), or a finished
    :class:`~merginguriel_core.selection.Selection`. The target's own data is never a
    source. ``training`` holds the fine-tuning settings (its ``epochs`` is replaced by
    ``options.max_epochs``); ``params`` are the strategy's. The merges are scored with
    ``eval_max_length`` tokens per example (default: the training's ``max_length``).
    """
    from merginguriel_core.languages import resolve_language
    from merginguriel_core.merge import resolve_device
    from merginguriel_core.models import resolve_location
    from merginguriel_core.params import resolve_params
    from merginguriel_core.plan import Problems, _registry_for, data_location, evaluator_objects, resolve_plugin
    from merginguriel_core.selection import Selection, SelectionOptions

    registry = _registry_for(registry, strategy, dataset, "linear")
    options = options or IterativeOptions()
    training = replace(training or TrainingConfig(), epochs=float(options.max_epochs))
    problems, resolved = Problems(), {}
    problems.errors += [ConfigError(problem) for problem in options.problems()]
    with problems.check():
        training.check()
    with problems.check():
        resolved["strategy"] = resolve_plugin("strategy", strategy, registry)
    with problems.check():
        resolved["dataset"] = resolve_plugin("dataset", dataset, registry)
    with problems.check():
        resolved["location"] = data_location(data_dir, data_file)
    with problems.check():
        resolved["device"] = resolve_device(device)
    with problems.check():
        resolved["target"] = resolve_language(target).locale
    with problems.check():
        resolved["evaluators"] = evaluator_objects(evaluators, registry)
    codes: list[str] = []
    for code in locales or ():
        with problems.check():
            codes.append(resolve_language(code).locale)
    with problems.check():
        repeated = sorted({code for code in codes if codes.count(code) > 1})
        if repeated:
            raise ConfigError(f"--locales names {', '.join(repeated)} more than once (aliases count as the same language)")
        if resolved.get("target") in codes:
            raise ConfigError(f"--locales names the target {resolved['target']}: the target's own data is never a "
                              "source; leave it out")
    if "strategy" in resolved:
        chosen = resolved["strategy"]
        with problems.check():
            resolved["params"] = resolve_params(chosen.params, params or {}, f"strategy {chosen.name!r}")
        with problems.check():
            if chosen.needs_data and resolved.get("location") is None:
                raise ConfigError(f"strategy {chosen.name!r} needs labelled data; pass --data-dir (each model's own "
                                  "training split is used)")
    if isinstance(selection, SelectionOptions):
        with problems.check():
            selection.check()
    with problems.check():
        if not Path(base_model).is_dir() and Path(base_model).exists():
            raise ConfigError(f"--base-model {base_model} is a file; give a model folder or a hub id")
    problems.raise_any()

    data, location, target = resolved["dataset"], resolved["location"], resolved["target"]
    available = sorted(set(data.locales(location)) - {target})
    unknown = [code for code in codes if code not in available]
    if unknown:
        for code in unknown:
            data.load(location, code, "train")  # the dataset's own error says what it has
        raise ConfigError(f"dataset {data.name} has no training data for {', '.join(unknown)}; it has "
                          f"{', '.join(available)}")
    chosen_selection = _select(selection, target, codes, available, registry)
    sources = chosen_selection.weights
    if len(sources) < 2:
        raise ConfigError(f"iterative training needs at least 2 sources to merge; the selection has "
                          f"{len(sources)} ({', '.join(s for s, _ in sources)}); pass more --locales or a larger "
                          "--num-languages")
    strategy_object = resolved["strategy"]
    strategy_object.check(resolved["params"], len(sources), None)
    base = resolve_location(str(base_model))
    return IterativePlan(
        output=Path(output), target=target, sources=tuple(sources), strategy=strategy_object,
        params=resolved["params"], base_model=base, dataset=data, location=location,
        label_space=tuple(data.labels(location)), training=training, options=options, device=resolved["device"],
        eval_split=eval_split, evaluators=resolved["evaluators"], eval_max_length=eval_max_length,
        eval_batch_size=eval_batch_size, keep_model=keep_model,
        keep_checkpoints=keep_checkpoints, selection=chosen_selection if isinstance(chosen_selection, Selection) else None,
        registry=registry, progress=progress, stats_dir=Path(stats_dir) if stats_dir is not None else None,
    )


def _select(selection: Any, target: str, codes: list[str], available: list[str], registry: Any):
    """The sources and weights: ``selection``'s weighting over ``codes`` (all of them), or
    over every language with training data."""
    from merginguriel_core.plan import resolve_plugin
    from merginguriel_core.selection import Selection, SelectionOptions, select_sources

    if isinstance(selection, Selection):
        return selection
    options = selection if isinstance(selection, SelectionOptions) else SelectionOptions()
    weighting = resolve_plugin("weighting", options.weighting, registry)
    if codes:
        return select_sources(weighting, options, available=codes, target=target, source_langs=tuple(codes),
                              num_languages=len(codes), top_k=max(options.top_k, len(codes)))
    return select_sources(weighting, options, available=available, target=target)


# ------------------------------------------------------------------------------ members
class _PeakMemory:
    """The peak memory while it is open: the device's allocator peak on CUDA, the process's
    resident set (sampled every 20 ms) on the CPU."""

    def __init__(self, device: "torch.device", pids: Iterable[int] = ()):
        self.device, self.pids, self.peak, self._stop = device, tuple(pids), 0, threading.Event()

    @staticmethod
    def now(device: "torch.device") -> int:
        """The memory in use now: allocated on the device (CUDA), resident on the CPU."""
        import torch

        if device.type == "cuda":
            return int(torch.cuda.memory_allocated(device))
        return _PeakMemory(device).resident()

    def resident(self) -> int:
        """Resident bytes of this process and the worker processes ``pids``."""
        total = 0
        for pid in ("self", *self.pids):
            try:
                with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
                    total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError):
                if pid == "self":
                    import resource

                    total += resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return total

    def __enter__(self) -> "_PeakMemory":
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = self.resident()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.resident())

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.resident())


@dataclass(frozen=True)
class _Setup:
    """What a member needs from the plan (picklable, for worker processes)."""

    dataset: Any
    location: str | None
    label_space: tuple[str, ...]
    base_model: Path
    training: TrainingConfig
    device: Any

    @classmethod
    def of(cls, plan: IterativePlan) -> "_Setup":
        return cls(plan.dataset, plan.location, plan.label_space, plan.base_model, plan.training, plan.device)


class _Member:
    """One source model in training: its :class:`~merginguriel_core.training.FineTuning` and
    its own random state (dropout), so that its run does not depend on the others' order or
    on whether they share a process."""

    def __init__(self, plan: _Setup, locale: str, checkpoint: Path | None = None, share: "_Member | None" = None):
        """``share``: a member in this process whose tokenizer (and, with frozen embeddings,
        embedding matrix: it never changes) this one uses instead of a copy of its own."""
        import torch

        from merginguriel_core.training import FineTuning, _load_model, _load_splits, _seed_everything

        self.locale, self.plan = locale, plan
        splits = _load_splits(plan.dataset, plan.location, locale, plan.training)
        if list(splits.label_space) != list(plan.label_space):
            raise ConfigError(f"the labels of {locale} differ from the dataset's")
        _seed_everything(plan.training.seed)  # every model starts from the same base and head
        model, tokenizer = _load_model(str(plan.base_model), splits.label_space, plan.device)
        if share is not None:
            tokenizer = share.run.tokenizer
            if plan.training.freeze_embeddings:
                model.get_input_embeddings().weight = share.model.get_input_embeddings().weight
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(plan.device) if plan.device.type == "cuda" else None
        self.run = FineTuning(model, tokenizer, splits, plan.training, plan.device)
        if checkpoint is not None:
            self.load(checkpoint)

    @property
    def model(self):
        return self.run.model

    def train_epoch(self) -> dict[str, Any]:
        import torch

        started = time.perf_counter()
        with torch.random.fork_rng(devices=[self.plan.device] if self.cuda_rng is not None else []):
            torch.set_rng_state(self.rng)
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state(self.cuda_rng, self.plan.device)
            losses = self.run.epoch()
            self.rng = torch.get_rng_state()
            if self.cuda_rng is not None:
                self.cuda_rng = torch.cuda.get_rng_state(self.plan.device)
        trained = time.perf_counter()
        dev = self.run.dev_accuracy()
        return {"train_loss": float(sum(losses) / len(losses)) if losses else None, "dev_accuracy": dev,
                "steps": self.run.step, "train_seconds": round(trained - started, 2),
                "seconds": round(time.perf_counter() - started, 2)}

    def save(self, folder: Path) -> None:
        """A new folder: weights (a model folder any strategy reads), tokenizer and training state."""
        from safetensors.torch import save_file

        folder.mkdir()
        self.model.save_pretrained(folder, safe_serialization=True)
        self.run.tokenizer.save_pretrained(folder)
        tensors, facts = self.run.state()
        (folder / _MEMBER_STATE).mkdir()
        tensors["rng.cpu"] = self.rng
        if self.cuda_rng is not None:
            tensors["rng.cuda"] = self.cuda_rng
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / _MEMBER_TENSORS))
        (folder / _MEMBER_FACTS).write_text(json.dumps(facts) + "\n", encoding="utf-8")

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        from merginguriel_core.io import TensorSource

        with TensorSource(folder) as source:
            weights = {name: source.get(name) for name in source.keys()}
        missing = [name for name in self.model.state_dict() if name not in weights and name.endswith(".weight")]
        if missing:
            raise ConfigError(f"checkpoint {folder} lacks tensor {missing[0]}; it is damaged: start the run again")
        self.model.load_state_dict(weights, strict=False)
        tensors = load_file(str(folder / _MEMBER_TENSORS))
        facts = json.loads((folder / _MEMBER_FACTS).read_text(encoding="utf-8"))
        self.rng = tensors.pop("rng.cpu")
        self.cuda_rng = tensors.pop("rng.cuda", None)
        self.run.restore(tensors, facts)

    def absorb(self, merged: Mapping[str, "torch.Tensor"], mix: float) -> None:
        """Continue from ``mix * merged + (1 - mix) * own`` (every parameter the merge has;
        frozen ones stay as they are)."""
        import torch

        frozen = {name for name, parameter in self.model.named_parameters() if not parameter.requires_grad}
        with torch.no_grad():
            for name, tensor in self.model.state_dict().items():
                source = merged.get(name)
                if source is None or name in frozen:
                    continue
                source = source.to(tensor.device, tensor.dtype)
                if mix >= 1:
                    tensor.copy_(source)
                else:
                    tensor.mul_(1 - mix).add_(source, alpha=mix)

    def offload(self) -> None:
        """Move the model and its optimiser state to the CPU (between its epochs on a GPU)."""
        self._move("cpu")

    def onload(self) -> None:
        self._move(self.plan.device)

    def _move(self, device: Any) -> None:
        if self.plan.device.type == "cpu":
            return
        self.model.to(device)
        for values in self.run.optimizer.state.values():
            for name, value in values.items():
                if hasattr(value, "to") and getattr(value, "ndim", 0):
                    values[name] = value.to(device)


def _member_bytes(plan: IterativePlan) -> int:
    """A member's memory: weights, and for the trainable ones gradients and two AdamW moments,
    plus a quarter for activations and the allocator."""
    from merginguriel_core.io import TensorSource

    with TensorSource(plan.base_model) as source:
        total = source.total_bytes()
        embeddings = max((source.info(name).nbytes for name in source.keys() if "word_embeddings" in name), default=0)
    trainable = total - (embeddings if plan.training.freeze_embeddings else 0)
    return int(1.25 * (total + 3 * trainable))


def _free_bytes(device: "torch.device") -> int | None:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _Sequential:
    """Every member in this process; on a GPU only the one training is on the device."""

    parallel = False
    pids: tuple[int, ...] = ()

    def __init__(self, plan: IterativePlan, checkpoint: Path | None):
        self.members: list[_Member] = []
        for locale, _ in plan.sources:
            member = _Member(_Setup.of(plan), locale, checkpoint / locale if checkpoint is not None else None,
                             share=self.members[0] if self.members else None)
            member.offload()
            self.members.append(member)

    def train_epoch(self) -> dict[str, dict[str, Any]]:
        logs = {}
        for member in self.members:
            member.onload()
            logs[member.locale] = member.train_epoch()
            member.offload()
        return logs

    def save(self, folder: Path) -> None:
        for member in self.members:
            member.save(folder / member.locale)

    def absorb(self, merged: Mapping[str, Any], mix: float) -> None:
        for member in self.members:
            member.absorb(merged, mix)

    def close(self) -> None:
        self.members = []


def _worker(connection, plan: _Setup, locale: str, checkpoint: Path | None, threads: int) -> None:
    """A parallel member: trains, saves and absorbs when told (see :class:`_Parallel`)."""
    import torch

    torch.set_num_threads(threads)
    try:
        member = _Member(plan, locale, checkpoint)
        connection.send(("ready", None))
        while True:
            command, argument = connection.recv()
            if command == "epoch":
                connection.send(("done", member.train_epoch()))
            elif command == "save":
                member.save(argument)
                connection.send(("done", None))
            elif command == "absorb":
                merged, mix = argument
                member.absorb(merged, mix)
                del merged
                connection.send(("done", None))
            else:
                return
    except BaseException as exc:  # the parent reports it and stops the run
        connection.send(("error", f"{type(exc).__name__}: {exc}"))


class _Parallel:
    """One worker process per member, each with cores ÷ members torch threads; the merged
    tensors reach them through shared memory, not copies."""

    parallel = True

    def __init__(self, plan: IterativePlan, checkpoint: Path | None):
        import torch.multiprocessing as mp

        context = mp.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // len(plan.sources))
        self.workers = []
        for locale, _ in plan.sources:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, _Setup.of(plan), locale,
                                                            checkpoint / locale if checkpoint else None, threads),
                                      daemon=True)
            process.start()
            self.workers.append((locale, parent, process))
        self.pids = tuple(process.pid for _, _, process in self.workers)
        self._gather()

    def _gather(self) -> dict[str, Any]:
        answers = {}
        for locale, connection, process in self.workers:
            try:
                kind, value = connection.recv()
            except EOFError:
                process.join(timeout=5)
                raise MergingUrielError(f"the training worker of {locale} died (exit code {process.exitcode}); "
                                        "rerun with --resume") from None
            if kind == "error":
                raise MergingUrielError(f"training {locale} failed in its worker: {value}")
            answers[locale] = value
        return answers

    def _all(self, command: str, argument: Any = None) -> dict[str, Any]:
        for _, connection, _ in self.workers:
            connection.send((command, argument))
        return self._gather()

    def train_epoch(self) -> dict[str, dict[str, Any]]:
        return self._all("epoch")

    def save(self, folder: Path) -> None:
        for locale, connection, _ in self.workers:
            connection.send(("save", folder / locale))
        self._gather()

    def absorb(self, merged: Mapping[str, Any], mix: float) -> None:
        shared = {name: tensor.share_memory_() for name, tensor in merged.items()}
        self._all("absorb", (shared, mix))

    def close(self) -> None:
        for _, connection, process in self.workers:
            try:
                connection.send(("stop", None))
            except (OSError, BrokenPipeError):
                pass
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self.workers = []


def _members(plan: IterativePlan, checkpoint: Path | None):
    """Parallel workers when asked and memory allows (else said, and sequential)."""
    if not plan.options.parallel:
        return _Sequential(plan, checkpoint)
    needed, free = _member_bytes(plan) * len(plan.sources), _free_bytes(plan.device)
    if free is not None and needed > free:
        note(f"parallel training needs about {format_bytes(needed)} for {len(plan.sources)} models, but "
             f"{format_bytes(free)} is free on {plan.device}: training them one after another instead")
        return _Sequential(plan, checkpoint)
    return _Parallel(plan, checkpoint)


# ------------------------------------------------------------------------------ running
@dataclass
class _RunState:
    """Where a run is: what a checkpoint stores beside the members."""

    epoch: int = 0
    next_merge: int = 0
    first_loss: float | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    merges: list[dict[str, Any]] = field(default_factory=list)
    cycles: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)
    seconds: float = 0.0
    #: The cycle being closed when the checkpoint was taken (its merge follows it).
    pending: dict[str, Any] | None = None


def _merge_plan(plan: IterativePlan, folder: Path):
    """The merge of the checkpoints in ``folder``, planned as ``mu merge`` plans one."""
    from merginguriel_core.interfaces import LabelledData
    from merginguriel_core.merge import SourceModel
    from merginguriel_core.plan import plan_merge

    data = None
    if plan.strategy.needs_data:  # each model's own training split
        location = Path(plan.location)
        folder, file = (None, location) if location.is_file() else (location, None)
        data = LabelledData(plan.dataset, folder, file, "train", plan.training.max_length, plan.training.seed,
                            plan.stats_dir)
    return plan_merge(None, strategy=plan.strategy, sources=[SourceModel(locale, folder / locale, weight)
                                                              for locale, weight in plan.sources],
                      params=plan.params, base_model=plan.base_model if plan.strategy.needs_base else None, data=data,
                      device=str(plan.device), seed=plan.training.seed, progress=False, registry=plan.registry,
                      given=plan.strategy.options_read())


def _target_examples(plan: IterativePlan, split: str):
    """The target's ``split``, or ``None`` when the dataset has none."""
    try:
        return plan.dataset.load(plan.location, plan.target, split)
    except MergingUrielError:
        return None


def _score(plan: IterativePlan, model, tokenizer, examples) -> dict[str, float]:
    from merginguriel_core.evaluation import gold_ids, score
    from merginguriel_core.training import predict_logits

    logits = predict_logits(model, tokenizer, examples.texts, plan.eval_batch_size,
                            plan.eval_max_length or plan.training.max_length, plan.device)
    labels = list(plan.label_space)
    return score(logits.argmax(-1), gold_ids(examples, labels), len(labels), plan.evaluators or _accuracy(plan))


def _accuracy(plan: IterativePlan) -> tuple[Any, ...]:
    from merginguriel_core.plan import resolve_plugin

    return (resolve_plugin("evaluator", "accuracy", plan.registry),)


def _merge(plan: IterativePlan, folder: Path, keep: Path | None = None) -> tuple[dict[str, Any], Any, Any]:
    """Merge the checkpoints in ``folder`` in memory: ``(merged tensors, model, tokenizer)``."""
    from merginguriel_core.inmemory import model_from_state_dict, tokenizer_for
    from merginguriel_core.merge import merge_state_dict

    merge = _merge_plan(plan, folder)
    state = merge_state_dict(merge, keep=keep)
    first = folder / plan.sources[0][0]
    model = model_from_state_dict(first, state, device=plan.device)
    return model.state_dict(), model, tokenizer_for(first)


def _log(folder: Path, entry: Mapping[str, Any]) -> None:
    with open(folder / LOG_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _latest_checkpoint(folder: Path) -> Path | None:
    found = [p for p in (folder / CHECKPOINTS).glob("epoch-*") if p.is_dir() and (p / _RUN_FACTS).is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def _differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(wanted))
    return [f"{key} was {json.dumps(stored.get(key))}, now {json.dumps(wanted.get(key))}"
            for key in keys if stored.get(key) != wanted.get(key)]


def _start(plan: IterativePlan, resume: bool | str) -> tuple[Path | None, dict[str, Any] | None]:
    """Check the run folder against ``resume``: ``(checkpoint to continue from, finished result)``."""
    folder, config = plan.output, plan.config()
    state = folder / STATE_FILE
    if not state.is_file():
        if resume is True:
            raise ConfigError(f"--resume: {folder} holds no iterative run to resume ({STATE_FILE} is missing)")
        if folder.exists() and any(folder.iterdir()):
            raise ConfigError(f"{folder} is not empty and holds no iterative run; choose another --output")
        return None, None
    try:
        stored = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{state} is damaged ({exc}); choose another --output") from None
    if resume is False:
        raise ConfigError(f"{folder} holds an iterative run already; pass --resume to continue it, or choose another "
                          "--output")
    differences = _differences(stored.get("config", {}), config)
    if differences and resume is True:
        more = f" (and {len(differences) - 1} more difference{'s' if len(differences) > 2 else ''})" \
            if len(differences) > 1 else ""
        raise ConfigError(f"--resume: {folder} was started with another configuration: {differences[0]}{more}; "
                          "resume with the same options, or choose another --output")
    if differences:  # the runner's cells: a stale run is started again
        note(f"{folder}: a run of another configuration is discarded ({differences[0]})")
        shutil.rmtree(folder)
        return None, None
    if (folder / RESULT_FILE).is_file():
        return None, json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
    return _latest_checkpoint(folder), None


def run_iterative(plan: IterativePlan, *, resume: bool | str = False,
                  on_event: Callable[[dict[str, Any]], None] | None = None) -> IterativeResult:
    """Run ``plan`` (see the module docstring).

    ``resume``: ``False`` refuses a folder that holds a run; ``True`` continues one (refusing
    a missing run or one of another configuration); ``"auto"`` continues a run of the same
    configuration, starts one of another afresh, and returns a finished run's result. Each
    log entry is also passed to ``on_event``.
    """
    if not isinstance(plan, IterativePlan):
        raise TypeError(f"run_iterative takes an IterativePlan (from plan_iterative), not {type(plan).__name__}")
    folder = plan.output
    with OutputLock(folder):
        checkpoint, finished = _start(plan, resume)
        if finished is not None:
            return IterativeResult(**finished)
        folder.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            write_json_atomically(folder / STATE_FILE, {"config": plan.config(), "status": "running",
                                                        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return _Run(plan, checkpoint, on_event).run()


class _Run:
    def __init__(self, plan: IterativePlan, checkpoint: Path | None, on_event):
        self.plan, self.folder, self.on_event = plan, plan.output, on_event
        self.options = plan.options
        if checkpoint is not None:
            self.state = _RunState(**json.loads((checkpoint / _RUN_FACTS).read_text(encoding="utf-8")))
            self.state.resumed_from.append(self.state.epoch)
        else:
            self.state = _RunState(next_merge=self.options.merge_frequency)
        self.checkpoint = checkpoint
        self.started = time.perf_counter() - self.state.seconds
        self._checkpoint_seconds = 0.0

    def event(self, entry: dict[str, Any]) -> None:
        _log(self.folder, entry)
        if self.on_event is not None:
            self.on_event(entry)

    def run(self) -> IterativeResult:
        from merginguriel_core.lazy import tqdm

        plan, state = self.plan, self.state
        if self.checkpoint is not None:
            self.event({"event": "resumed", "epoch": state.epoch, "checkpoint": str(self.checkpoint)})
        members = _members(plan, self.checkpoint)
        try:
            self.event({"event": "start", "parallel": members.parallel, "sources": [list(s) for s in plan.sources]})
            with tqdm(total=self.options.max_epochs, initial=state.epoch, desc=f"iterative {plan.target}",
                      unit="epoch", disable=not plan.progress, leave=False) as bar:
                if self.checkpoint is not None:  # the checkpoint was taken before this merge
                    started = time.perf_counter()
                    with _PeakMemory(plan.device, members.pids) as memory:
                        merge = self.merge(members, self.checkpoint, reason=state.pending["reason"])
                    self.close_cycle(merge, state.pending["train_seconds"] + time.perf_counter() - started,
                                     max(memory.peak, state.pending.get("peak_memory_bytes", 0)), resumed=True)
                while state.epoch < self.options.max_epochs:
                    self.cycle(members)
                    bar.n = state.epoch
                    bar.refresh()
        finally:
            members.close()
        return self.finish()

    def cycle(self, members) -> None:
        """Epochs up to the next merge, then the checkpoint and the merge."""
        plan, state = self.plan, self.state
        started = time.perf_counter()
        first_epoch = state.epoch + 1
        peak = 0
        while True:
            state.epoch += 1
            epoch_started = time.perf_counter()
            with _PeakMemory(plan.device, members.pids) as memory:
                logs = members.train_epoch()
            peak = max(peak, memory.peak)
            losses = [m["train_loss"] for m in logs.values() if m["train_loss"] is not None]
            mean_loss = sum(losses) / len(losses) if losses else None
            mean_dev = _mean_dev(logs)
            if state.first_loss is None and mean_loss is not None:
                state.first_loss = mean_loss
            entry = {"event": "epoch", "epoch": state.epoch, "models": logs, "mean_train_loss": mean_loss,
                     "mean_dev_accuracy": mean_dev, "seconds": round(time.perf_counter() - epoch_started, 2),
                     "peak_memory_bytes": memory.peak}
            state.epochs.append(entry)
            self.event(entry)
            reason = self.merge_reason()
            if reason:
                break
        state.pending = {"epochs": [first_epoch, state.epoch], "reason": reason,
                         "train_seconds": round(time.perf_counter() - started, 2), "peak_memory_bytes": peak}
        with _PeakMemory(plan.device, members.pids) as memory:
            folder = self.save_checkpoint(members)
            merge = self.merge(members, folder, reason=reason)
        self.close_cycle(merge, time.perf_counter() - started, max(peak, memory.peak))

    def close_cycle(self, merge: Mapping[str, Any], seconds: float, peak: int, resumed: bool = False) -> None:
        state = self.state
        cycle = {"epochs": state.pending["epochs"], "seconds": round(seconds, 2), "peak_memory_bytes": peak,
                 "train_seconds": state.pending["train_seconds"], "merge_seconds": merge["seconds"],
                 "checkpoint_seconds": merge["checkpoint_seconds"], **({"resumed": True} if resumed else {})}
        state.pending = None
        state.cycles.append(cycle)
        self.event({"event": "cycle", **cycle})

    def merge_reason(self) -> str | None:
        state, options = self.state, self.options
        if state.epoch >= options.max_epochs:
            return "final"
        if state.epoch >= state.next_merge:
            return "scheduled"
        if options.performance_merge_trigger and len(state.epochs) >= 2:
            now, before = state.epochs[-1]["mean_dev_accuracy"], state.epochs[-2]["mean_dev_accuracy"]
            if now is not None and before is not None and now - before < options.convergence_threshold:
                return "stalled"
        return None

    def next_interval(self) -> int:
        options, state = self.options, self.state
        if not options.adaptive_merge_frequency:
            return options.merge_frequency
        loss = state.epochs[-1]["mean_train_loss"] if state.epochs else None
        if loss is None or not state.first_loss:
            return options.merge_frequency
        return adaptive_interval(options.merge_frequency, loss, state.first_loss, options.max_epochs)

    def save_checkpoint(self, members) -> Path:
        """Every member and the run state, atomically; older checkpoints removed."""
        started = time.perf_counter()
        root = self.folder / CHECKPOINTS
        root.mkdir(exist_ok=True)
        final = root / f"epoch-{self.state.epoch}"
        staging = root / f".epoch-{self.state.epoch}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        members.save(staging)
        self.state.seconds = time.perf_counter() - self.started
        self._checkpoint_seconds = time.perf_counter() - started
        (staging / _RUN_FACTS).write_text(json.dumps(asdict(self.state), default=str) + "\n", encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for older in root.iterdir():
            if older != final:
                shutil.rmtree(older, ignore_errors=True)
        return final

    def merge(self, members, folder: Path, reason: str) -> dict[str, Any]:
        """Merge the checkpoints in ``folder``; score the merge on the target's dev split; the
        members continue from it (unless it is the last)."""
        plan, state = self.plan, self.state
        started = time.perf_counter()
        last = state.epoch >= self.options.max_epochs
        keep = self.folder / MODEL if last and plan.keep_model else None
        if keep is not None and keep.exists():
            shutil.rmtree(keep)  # a killed run's final model: written again, from the same checkpoint
        merged, model, tokenizer = _merge(plan, folder, keep=keep)
        merged_at = time.perf_counter()
        dev = _target_examples(plan, "dev")
        target_dev = _score(plan, model, tokenizer, dev).get("accuracy") if dev is not None and len(dev) else None
        if last:
            self._final = (model, tokenizer, keep)
        del model
        if not last:
            members.absorb(merged, self.options.merge_mix)
            state.next_merge = state.epoch + self.next_interval()
        entry = {"event": "merge", "epoch": state.epoch, "reason": reason, "target_dev_accuracy": target_dev,
                 "peak_memory_bytes": _PeakMemory.now(plan.device),
                 "seconds": round(merged_at - started, 2), "checkpoint_seconds": round(self._checkpoint_seconds, 2),
                 "next_merge": None if last else state.next_merge}
        state.merges.append(entry)
        self.event(entry)
        return entry

    def finish(self) -> IterativeResult:
        """The final merge (the last checkpoint's) written and scored; the result recorded."""
        plan, state, folder = self.plan, self.state, self.folder
        model, tokenizer, keep = self._final
        metrics, examples = {}, 0
        if plan.eval_split is not None:
            found = _target_examples(plan, plan.eval_split)
            if found is None:
                note(f"{plan.dataset.name} has no {plan.eval_split} split for {plan.target}: the final model is not scored")
            else:
                metrics, examples = _score(plan, model, tokenizer, found), len(found)
        state.seconds = time.perf_counter() - self.started
        result = IterativeResult(
            target=plan.target, sources=[list(s) for s in plan.sources], metrics=metrics, eval_split=plan.eval_split,
            examples=examples, epochs=state.epochs, merges=state.merges, cycles=state.cycles,
            steps_per_model=state.epochs[-1]["models"][plan.sources[0][0]]["steps"] if state.epochs else 0,
            seconds=round(state.seconds, 1), resumed_from=state.resumed_from,
            model_folder=str(keep) if keep is not None else None)
        write_json_atomically(folder / RESULT_FILE, result.to_json())
        stored = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        write_json_atomically(folder / STATE_FILE, {**stored, "status": "done",
                                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if not plan.keep_checkpoints:
            shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
        self.event({"event": "done", "metrics": metrics, "seconds": result.seconds})
        return result


def adaptive_interval(frequency: int, loss: float, first_loss: float, max_epochs: int) -> int:
    """AdaComm's rule (Wang & Joshi, "Adaptive Communication Strategies to Achieve the Best
    Error-Runtime Trade-off in Local-Update SGD", SysML 2019): the epochs until the next merge
    are ``ceil(frequency * sqrt(loss / first_loss))``, at least 1 and at most ``max_epochs``;
    the models are merged more often as the training loss falls."""
    return max(1, min(max_epochs, math.ceil(frequency * math.sqrt(max(loss, 0.0) / first_loss))))


def _mean_dev(logs: Mapping[str, Mapping[str, Any]]) -> float | None:
    values = [m["dev_accuracy"] for m in logs.values() if m.get("dev_accuracy") is not None
              and not math.isnan(m["dev_accuracy"])]
    return sum(values) / len(values) if values else None


# ------------------------------------------------------------------------- the results
def cell_outcome(plan: IterativePlan, result: IterativeResult) -> dict[str, Any]:
    """The fields of an ``iterative`` cell's ``results.json`` (the experiment layout's):
    metrics, sources, timings, peak memory, and the whole history of the run."""
    cycles = result.cycles
    return {
        "status": "done", "sources": result.sources, "metrics": result.metrics, "examples": result.examples,
        "timings": {"total": result.seconds, "train": round(sum(c["train_seconds"] for c in cycles), 2),
                    "merge": round(sum(c["merge_seconds"] for c in cycles), 2),
                    "checkpoint": round(sum(c["checkpoint_seconds"] for c in cycles), 2)},
        "peak_memory_bytes": max((c["peak_memory_bytes"] for c in cycles), default=None),
        "iterative": {"strategy": plan.strategy.name, "params": dict(plan.params), "weighting": plan.weighting,
                      "options": {k: v for k, v in asdict(plan.options).items() if k != "parallel"},
                      "training": asdict(plan.training), "steps_per_model": result.steps_per_model,
                      "eval_max_length": plan.eval_max_length or plan.training.max_length,
                      "epochs": result.epochs, "merges": result.merges, "cycles": cycles,
                      "resumed_from": result.resumed_from},
        **({"model_folder": result.model_folder} if result.model_folder else {}),
    }


def cell_id(plan: IterativePlan) -> str:
    """The run's cell in the experiment layout: ``iterative-STRATEGY@WEIGHTING``."""
    return f"iterative-{plan.strategy.name}@{plan.weighting}"


def write_results(plan: IterativePlan, result: IterativeResult) -> Path:
    """Write the run as a one-cell experiment results folder in ``plan.output``
    (``experiment.json``, ``cells/TARGET/CELL/results.json``), which ``mu report`` reads;
    return the cell's file."""
    import hashlib

    from merginguriel_core.experiments.results import EXPERIMENT_FILE, FORMAT, cell_file, write_cell

    config = plan.config()
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    key = f"{plan.target}/{cell_id(plan)}"
    path = cell_file(plan.output, plan.target, cell_id(plan))
    write_cell(path, {"spec": digest, "cell": key, "target": plan.target, "kind": "iterative",
                      "method": plan.strategy.name, "selection": plan.weighting, "draw": None,
                      "definition_hash": digest, "definition": config, **cell_outcome(plan, result)})
    write_json_atomically(plan.output / EXPERIMENT_FILE, {
        "format": FORMAT, "name": f"train-iterative {plan.target}", "digest": digest, "spec": {"iterative": config},
        "targets": [plan.target], "cells": [key], "runs": []})
    return path
