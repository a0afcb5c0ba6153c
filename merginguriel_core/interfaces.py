"""What plugins register: weightings, merge strategies, voting methods and evaluators.

Each is a small class with a ``name`` (what the CLI selects), a one-line ``description``,
its declared ``params`` and one method that does the work. The maths lives in pure
functions; these classes are the thin wiring the engine calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Sequence

from merginguriel_core.errors import ConfigError
from merginguriel_core.params import Param

if TYPE_CHECKING:  # annotations only: importing the interfaces (every plugin does) imports no torch
    import numpy as np
    import torch

    from merginguriel_core.data import Examples


# --------------------------------------------------------------------------- weightings
@dataclass(frozen=True)
class WeightingRequest:
    """Everything a weighting may use to choose sources and weights.

    ``target`` and ``available`` are canonical locales (see
    :func:`merginguriel_core.languages.resolve_language`); ``available`` are the locales
    that have a model, already narrowed by ``--source-langs``.
    """

    target: str | None
    available: tuple[str, ...]
    top_k: int = 20
    sinkhorn_iters: int = 20
    num_languages: int = 5
    include_target: bool = False
    features: str = "syntax_knn"
    similarity_matrix: Path | None = None
    manual_weights: Mapping[str, float] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Unlabelled target-language text (:class:`~merginguriel_core.target_text.TargetText`),
    #: given only to a weighting that :attr:`~Weighting.needs_target_text`.
    target_text: Any = None
    #: Where each available model is (locale -> folder or hub id), for weightings that read
    #: the models themselves; empty when the caller has only locales.
    models: Mapping[str, str] = field(default_factory=dict)
    #: The base model, when the caller knows one (``--base-model``, the spec's ``models.base``).
    base_model: str | None = None
    #: The device a weighting that runs a model uses (``auto``, ``cpu``, ``cuda``).
    device: str = "auto"


@dataclass
class WeightResult:
    """The chosen sources, highest weight first, with finite non-negative weights (not all
    zero). :func:`~merginguriel_core.selection.select_sources` scales them to sum to 1 (the
    only place they are normalised); a weighting whose maths normalises need not bother.

    ``details`` is JSON-serialisable and recorded in ``merge_details.json``; ``trace`` is an
    optional :class:`merginguriel_core.explain.Explanation` of the steps, shown by
    ``mu similarity --explain``. ``group_weights``, optional, gives weights per group of
    tensors (a :class:`merginguriel_core.groups.GroupWeights` over the same sources): a merge
    gives each tensor its group's weights; ``weights`` stay the model-level ones (an
    ensemble's, and those of tensors in no listed group).
    """

    weights: list[tuple[str, float]]
    details: dict[str, Any] = field(default_factory=dict)
    trace: Any = None
    notes: list[str] = field(default_factory=list)
    group_weights: Any = None


#: The shared selection options a weighting may read (option names with underscores:
#: ``top_k`` is ``--top-k``). ``--source-langs`` and ``--weighting-param`` apply to every weighting.
SELECTION_OPTIONS = frozenset(
    {"top_k", "sinkhorn_iters", "num_languages", "include_target", "features", "similarity_matrix", "weights"}
)


class Weighting(ABC):
    """Chooses which source models contribute to a target, and with what weight."""

    name: ClassVar[str]
    description: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    #: Whether ``--target-lang`` is required.
    needs_target: ClassVar[bool] = True
    #: Whether unlabelled target text is required (``--target-text`` or ``--target-text-split``);
    #: target text given to a weighting that does not read it is refused.
    needs_target_text: ClassVar[bool] = False
    #: The :data:`SELECTION_OPTIONS` this weighting reads; the CLI refuses the others when
    #: they are given, so that no option is silently ignored. Default: all of them.
    reads: ClassVar[frozenset[str]] = SELECTION_OPTIONS

    def options_read(self, target: str | None) -> frozenset[str]:
        """The selection options read for ``target`` (``None``: no target); default :attr:`reads`."""
        return self.reads

    @abstractmethod
    def compute(self, request: WeightingRequest) -> WeightResult:
        """Return the sources and their weights for ``request``."""


# ---------------------------------------------------------------------- merge strategies
@dataclass
class Chunk:
    """Rows ``[start, stop)`` of one tensor from every source, ready to merge.

    ``sources`` are float32 tensors on the merge device, in the order of ``weights``;
    ``base`` is the same rows of the base model, or ``None`` when there is no base model or
    it lacks this tensor (e.g. a fresh classifier head). ``generator`` is seeded from the
    run's seed, the tensor name and ``start``, so random strategies are reproducible.
    """

    name: str
    start: int
    stop: int
    sources: list[torch.Tensor]
    base: torch.Tensor | None
    weights: torch.Tensor
    params: Mapping[str, Any]
    generator: torch.Generator | None = None
    #: What :meth:`MergeStrategy.prepare` returned (e.g. per-model statistics files).
    prepared: Any = None


@dataclass
class TensorJob:
    """One output tensor to merge, for strategies that need a whole-tensor statistic.

    :meth:`chunks` yields the tensor chunk by chunk, so a first pass can compute a
    statistic (a magnitude threshold, a norm) without K full copies in memory.
    """

    name: str
    shape: tuple[int, ...]
    weights: torch.Tensor
    params: Mapping[str, Any]
    has_base: bool
    _chunks: Any = field(repr=False, default=None)
    #: What :meth:`MergeStrategy.prepare` returned.
    prepared: Any = None
    #: How many chunks :meth:`chunks` yields (1 means the whole tensor at once, read once).
    num_chunks: int = 1

    def chunks(self) -> Iterator[Chunk]:
        """Yield the tensor's chunks in row order."""
        return self._chunks()


@dataclass(frozen=True)
class LabelledData:
    """The labelled examples a data-dependent strategy (``needs_data``) computes from.

    Either ``data_file`` (one CSV/TSV/JSONL table for every source model) or ``data_dir``
    read by ``dataset`` (each model's own language, split ``split``). ``max_length`` is the
    token limit per example, ``seed`` draws the examples, ``stats_dir`` is where per-model
    statistics are stored and reused. How many examples a strategy uses is its own
    :class:`~merginguriel_core.params.Param` (``examples`` for fisher and regmean).
    """

    dataset: "Dataset | None" = None
    data_dir: Path | None = None
    data_file: Path | None = None
    split: str = "train"
    max_length: int = 128
    seed: int = 0
    stats_dir: Path | None = None

    @property
    def location(self) -> str:
        """What the user gave: the folder or the file."""
        return str(self.data_file if self.data_file is not None else self.data_dir)

    def examples(self, locale: str) -> "Examples":
        """The examples for the source model of ``locale``."""
        from merginguriel_core.data import read_table

        if self.data_file is not None:
            return read_table(self.data_file)
        if self.dataset is None or self.data_dir is None:
            raise ConfigError("no labelled data; pass --data-dir DIR or --data-file FILE")
        return self.dataset.load(str(self.data_dir), locale, self.split)

    def describe(self) -> dict[str, Any]:
        """For ``merge_details.json``."""
        return {
            "dataset": None if self.data_file is not None or self.dataset is None else self.dataset.name,
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "data_file": None if self.data_file is None else str(self.data_file),
            "split": self.split, "max_length": self.max_length, "seed": self.seed,
            "stats_dir": None if self.stats_dir is None else str(self.stats_dir),
        }


@dataclass(frozen=True)
class MergeContext:
    """What :meth:`MergeStrategy.prepare` may use: the run, before any tensor is merged.

    ``sources`` are :class:`merginguriel_core.merge.SourceModel` (locale, folder, weight
    normalised to sum to 1); ``params`` the strategy's resolved params; ``data`` the
    labelled data of a data-dependent strategy (``None`` otherwise).
    """

    sources: tuple[Any, ...]
    base: Path | None
    params: Mapping[str, Any]
    device: torch.device
    data: LabelledData | None = None
    progress: bool = True


#: Options of data-dependent strategies (``--data-dir`` ...), with underscores.
DATA_OPTIONS = frozenset({"dataset", "data_dir", "data_file", "stats_dir", "max_length"})
#: The ``mu merge`` options that only some strategies read.
STRATEGY_OPTIONS = DATA_OPTIONS | {"base_model", "seed"}


class MergeStrategy(ABC):
    """Merges K aligned source tensors (and optionally a base) into one tensor.

    Chunks may be shared between passes (a tensor that fits one chunk is read once), so
    ``tensor_statistics`` and ``merge_chunk`` must not modify ``chunk.sources`` or
    ``chunk.base`` in place.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    reference: ClassVar[str | None] = None
    params: ClassVar[tuple[Param, ...]] = ()
    #: Whether the strategy needs ``--base-model`` (task vectors are deltas from it).
    needs_base: ClassVar[bool] = False
    #: Whether the strategy needs labelled data (``--data-dir`` or ``--data-file``).
    needs_data: ClassVar[bool] = False
    #: Whether the strategy draws random numbers (``chunk.generator``), so ``--seed`` matters.
    random: ClassVar[bool] = False
    #: Whether, when all inputs agree exactly on a tensor (every source, and the base where
    #: the strategy is given one and it has the tensor), the merge of that tensor is that
    #: tensor. The engine then copies it instead of merging it (frozen embeddings are most
    #: of a fine-tuned classifier). Off unless a strategy says so: a strategy that adds noise
    #: to, rescales or shrinks agreed values must not be short-cut (every built-in but
    #: regmean sets it).
    keeps_agreement: ClassVar[bool] = False

    def options_read(self) -> frozenset[str]:
        """The :data:`STRATEGY_OPTIONS` this strategy reads; ``mu merge`` refuses the others
        when they are given. Default: ``base_model`` if :attr:`needs_base`, the data options
        and ``seed`` if :attr:`needs_data`, ``seed`` if :attr:`random`."""
        read = set()
        if self.needs_base:
            read.add("base_model")
        if self.needs_data:
            read |= DATA_OPTIONS | {"seed"}
        if self.random:
            read.add("seed")
        return frozenset(read)

    def check(self, params: Mapping[str, Any], num_models: int, data: LabelledData | None) -> None:
        """Reject a configuration before any weights load (override to add checks): raise a
        :class:`~merginguriel_core.errors.ConfigError` naming the bad value. ``params`` are
        resolved; ``data`` is the run's labelled data (``None`` unless :attr:`needs_data`)."""

    def prepare(self, context: MergeContext) -> Any:
        """Optional: compute or load what the whole run needs (e.g. per-model statistics).

        Called once, after the sources are validated and before the first tensor. The
        result reaches every :class:`TensorJob` and :class:`Chunk` as ``prepared``; if it has
        a ``close()`` method, the engine calls it at the end.
        """
        return None

    def tensor_statistics(self, job: TensorJob) -> Any:
        """Optional first pass over ``job.chunks()``; its result goes to :meth:`merge_chunk`."""
        return None

    @abstractmethod
    def merge_chunk(self, chunk: Chunk, statistics: Any) -> torch.Tensor:
        """Return the merged rows, shaped like ``chunk.sources[0]``."""


# ------------------------------------------------------------------------ voting methods
class VotingMethod(ABC):
    """Combines K models' logits on the same examples into one score per class."""

    name: ClassVar[str]
    description: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()

    @abstractmethod
    def combine(self, logits: np.ndarray, weights: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
        """``logits`` (K, N, C), ``weights`` (K,) summing to 1 -> scores (N, C); argmax predicts."""


# ---------------------------------------------------------------------------- evaluators
class Evaluator(ABC):
    """Computes metrics from predicted and gold label ids."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abstractmethod
    def evaluate(self, predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
        """Return metric name -> value."""


# ------------------------------------------------------------------------------ datasets
class Dataset(ABC):
    """Labelled text classification data, per language and split.

    ``location`` is what the user gave (``--data-dir`` or ``--data-file``), or ``None`` for
    the dataset's hub id. Locales are canonical (:func:`merginguriel_core.languages.resolve_language`);
    splits are ``train``, ``dev`` and ``test``.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    hub_id: ClassVar[str | None] = None
    #: Whether :meth:`labels` is the dataset's own fixed id order (SIB-200, MASSIVE). A
    #: dataset whose labels are only a set read from the data (a local table) sets this to
    #: ``False``: a model is then evaluated in its own ``id2label`` order, provided every
    #: label of the data is one of the model's.
    fixed_label_order: ClassVar[bool] = True

    @abstractmethod
    def labels(self, location: str | None) -> list[str]:
        """The label space, in id order, identical for every language."""

    @abstractmethod
    def locales(self, location: str | None) -> list[str]:
        """The canonical locales this data has."""

    @abstractmethod
    def load(self, location: str | None, locale: str, split: str) -> "Examples":
        """The examples of one language's split (an error naming what exists if absent or empty)."""


# ----------------------------------------------------------------------------- executors
class Executor(ABC):
    """Runs the tasks of an experiment grid: where cells are computed (local processes, a
    Ray cluster, ...). Every executor writes the same results layout, since the task itself
    writes its cells' ``results.json``; the executor only decides where it runs."""

    name: ClassVar[str]
    description: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()

    @abstractmethod
    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any], *, workers: int | None,
            params: Mapping[str, Any], env: Mapping[str, str]) -> Iterator[tuple[int, Any]]:
        """Call ``function(task)`` for every task; yield ``(index, result)`` as each finishes,
        in any order, where ``result`` is the return value or the exception it raised (one
        task's failure never stops the others). ``function`` and the tasks are picklable;
        ``workers`` is how many run at once (``None``: the executor's own choice);
        ``params`` are this executor's resolved params; ``env`` are environment variables the
        tasks need (the spec's ``$VARS``): an executor whose workers do not inherit this
        process's environment passes them on."""
