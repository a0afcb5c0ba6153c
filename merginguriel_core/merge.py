"""The streaming merge engine: plan, then merge tensor by tensor (chunk by chunk), then write.

Memory stays bounded by the chunk being merged: for each output tensor the engine reads the
same rows from every source (plain file reads, no mmap), merges them on the chosen device,
and writes the result straight into the output safetensors file, whose header was written
from the layout before the first byte of data. Everything goes into a temporary folder next
to the output, renamed into place only when complete. :func:`merge_state_dict` runs the same
merge into tensors in memory instead (for evaluating a merged model without writing it).

A tensor on which every input agrees byte for byte (embeddings frozen during fine-tuning) is
copied instead of merged, when the strategy keeps agreement
(:attr:`~merginguriel_core.interfaces.MergeStrategy.keeps_agreement`) and the plan allows it
(:attr:`MergePlan.agreement_shortcut`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Protocol

from merginguriel_core.errors import ConfigError, ModelError, TensorFileError
from merginguriel_core.interfaces import STRATEGY_OPTIONS, Chunk, LabelledData, MergeContext, MergeStrategy, TensorJob
from merginguriel_core.io import ShardedSafetensorsWriter, TensorSource
from merginguriel_core.lazy import LazyMapping, tqdm
from merginguriel_core.memory import MMAP_THRESHOLD_MAX, reuse_freed_buffers
from merginguriel_core.outputs import check_output_path, staged_folder
from merginguriel_core.selection import check_options_read

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    from merginguriel_core.lazy import numpy as np, torch

#: Files never copied from a source folder into the merged model.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")
_SKIPPED_FILES = {"model.safetensors.index.json", "pytorch_model.bin.index.json", "training_args.bin"}
#: The heatmap of per-group weights a merged folder holds when the merge had them.
GROUP_WEIGHTS_PLOT = "group_weights.png"
DTYPES = LazyMapping(lambda: {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16})


@dataclass(frozen=True)
class SourceModel:
    """One source of a merge: its locale, local folder and weight."""

    locale: str
    path: Path
    weight: float
    #: Where the model came from when that is not ``path`` (a hub id), for the record.
    origin: str | None = None


@dataclass(frozen=True)
class MergePlan:
    """A merge, fully resolved and checked: what :func:`run_merge` does, and nothing else.

    Built by :func:`merginguriel_core.plan.plan_merge`, which validates everything once;
    :func:`run_merge` only reads it. ``sources`` are local folders with weights summing to
    1; ``params`` the strategy's resolved params; ``device`` a resolved device;
    ``chunk_bytes`` ``None`` picks the chunk size from the model size (see
    :func:`auto_chunk_bytes`); ``data`` the labelled data of a data-dependent strategy.
    """

    sources: tuple[SourceModel, ...]
    strategy: MergeStrategy
    output: Path | None
    params: Mapping[str, Any]
    base: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: str = "auto"
    chunk_bytes: int | None = None
    max_shard_bytes: int = 2 * 1024**3
    overwrite: bool = False
    seed: int = 0
    progress: bool = True
    data: LabelledData | None = None
    #: Facts recorded in merge_details.json besides the plan's own (target, weighting, ...).
    details: Mapping[str, Any] = field(default_factory=dict)
    #: The selection the sources came from, when a weighting chose them.
    selection: Any = None
    #: Copy a tensor on which every input agrees byte for byte instead of merging it, when
    #: the strategy keeps agreement (:attr:`MergeStrategy.keeps_agreement`). ``False``
    #: merges every tensor (``dataclasses.replace(plan, agreement_shortcut=False)``); the
    #: two differ at most by the strategy's float rounding on the agreed tensors.
    agreement_shortcut: bool = True
    #: Weights per group of tensors (:class:`~merginguriel_core.groups.GroupWeights`, sources
    #: in the order of ``sources``, each group summing to 1): a tensor of a listed group is
    #: merged with its group's weights, every other tensor with the sources' weights.
    group_weights: Any = None
    #: ``model`` writes a whole model; ``adapter`` (adapter sources only) one LoRA adapter:
    #: the exact concatenation for ``linear`` without ``adapter_rank``, else the merged ΔW
    #: factored by truncated SVD to ``adapter_rank`` (default: the sources' largest rank).
    output_format: str = "model"
    adapter_rank: int | None = None

    @property
    def weights(self) -> tuple[tuple[str, float], ...]:
        """``(locale, weight)`` of every source, highest weight first."""
        return tuple((s.locale, s.weight) for s in self.sources)


@dataclass
class MergeSummary:
    """What a finished merge produced."""

    output: Path
    tensors: int
    bytes_written: int
    seconds: float
    device: str
    details: dict[str, Any]


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} asked for, but no CUDA GPU is available; use auto or cpu")
        return torch.device(device)
    raise ConfigError(f"unknown --device {device!r}; allowed: auto, cpu, cuda, cuda:N")


def merge_inputs(sources: Iterable[SourceModel], base: Path | None) -> list[Path]:
    """What a merge reads, which its output may never be, hold or lie inside: the source
    folders, the base model and the base models that adapter sources name."""
    from merginguriel_core.adapters import local_adapter_base

    sources = list(sources)
    bases = [b for s in sources if (b := local_adapter_base(s.path)) is not None]
    return [s.path for s in sources] + ([base] if base is not None else []) + bases


def check_output(output: Path, overwrite: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse an output that would clobber something: an existing folder (unless
    ``overwrite``), a symbolic link, the current folder or one above it, a path under a file,
    or any folder that is, holds or lies inside one of the ``inputs`` (source and base
    models), whatever ``overwrite`` says. Missing folders above it are made when it is placed. Checked again, atomically, when the result is placed
    (:func:`merginguriel_core.outputs.staged_folder`)."""
    check_output_path(output, inputs)
    if output.exists() and not overwrite:
        raise ConfigError(f"output {output} already exists; pass --overwrite to replace it")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {output} exists and is not a folder")
    above = next(folder for folder in [output.parent, *output.parent.parents] if folder.exists())
    if not above.is_dir():
        raise ConfigError(f"cannot make the folder for --output {output}: {above} is a file")


def check_strategy_options(strategy: MergeStrategy, given: Iterable[str], alternatives: Iterable[MergeStrategy] = ()) -> None:
    """Refuse a strategy option (``--base-model``, ``--data-dir``, ``--seed``, ...) that the
    user gave but ``strategy`` does not read (:meth:`MergeStrategy.options_read`)."""
    check_options_read(given, STRATEGY_OPTIONS, strategy.options_read(), f"--strategy {strategy.name}",
                       {other.name: other.options_read() for other in alternatives})


def _label_space(folder: Path) -> dict[str, str] | None:
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        labels = json.loads(config.read_text(encoding="utf-8")).get("id2label")
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {config}: {exc}") from None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else None


def check_compatible(sources: list[SourceModel], readers: list[TensorSource], base: BaseView | TensorSource | None) -> None:
    """All sources hold the same tensor names, shapes and dtypes, and the same label space."""
    first, first_reader = sources[0], readers[0]
    names = first_reader.keys()
    name_set = set(names)
    for source, reader in zip(sources[1:], readers[1:]):
        other = set(reader.keys())
        if other != name_set:
            missing, extra = sorted(name_set - other), sorted(other - name_set)
            lacking, having, tensor = (source, first, missing[0]) if missing else (first, source, extra[0])
            raise TensorFileError(
                f"model {lacking.locale} ({lacking.path}) lacks tensor {tensor}, which {having.locale} has; "
                f"all sources must have the same tensors"
            )
        for name in names:
            a, b = first_reader.info(name), reader.info(name)
            if a.shape != b.shape:
                raise TensorFileError(
                    f"tensor {name} has shape {list(b.shape)} in {source.locale} but {list(a.shape)} in {first.locale}"
                )
            if a.dtype != b.dtype:
                raise TensorFileError(
                    f"tensor {name} has dtype {b.dtype} in {source.locale} but {a.dtype} in {first.locale}"
                )
    first_labels = _label_space(first.path)
    for source in sources[1:]:
        labels = _label_space(source.path)
        if first_labels is not None and labels is not None and labels != first_labels:
            raise ModelError(
                f"label spaces differ: {source.locale} has id2label {labels}, {first.locale} has {first_labels}"
            )
    if base is not None:
        for name in names:
            if name in base and base.info(name).shape != first_reader.info(name).shape:
                raise TensorFileError(
                    f"tensor {name} has shape {list(base.info(name).shape)} in the base model "
                    f"but {list(first_reader.info(name).shape)} in the sources"
                )


class BaseView:
    """The base model's tensors under the sources' names.

    A fine-tuned classifier nests the encoder under a prefix (``bert.``, ``roberta.``) that
    the encoder checkpoint it came from lacks (``embeddings.word_embeddings.weight`` vs
    ``bert.embeddings.word_embeddings.weight``), or the other way round. Exact names are
    matched first; otherwise one leading component is stripped from the sources' names (or
    added to them) when that makes them match. Source tensors with no counterpart (a new
    classifier head) have no base, as before.
    """

    def __init__(self, base: TensorSource, source_names: Iterable[str], folder: Path):
        base_names = set(base.keys())
        self.base = base
        self.names: dict[str, str] = {}
        self.prefix: str | None = None
        stripped: dict[str, dict[str, str]] = {}  # prefix -> {source name: base name}
        for name in source_names:
            if name in base_names:
                self.names[name] = name
                continue
            head, _, rest = name.partition(".")
            if rest and rest in base_names:
                stripped.setdefault(f"-{head}.", {})[name] = rest
        if not self.names:
            for base_name in base_names:
                head, _, rest = base_name.partition(".")
                if rest:
                    stripped.setdefault(f"+{head}.", {})[rest] = base_name
            stripped = {p: {s: b for s, b in m.items() if s in set(source_names)} for p, m in stripped.items()}
        if stripped:
            prefix, mapping = max(stripped.items(), key=lambda item: len(item[1]))
            if len(mapping) > len(self.names):
                self.names, self.prefix = {**self.names, **mapping}, prefix
        if not self.names:
            example = next(iter(source_names), "?")
            raise TensorFileError(
                f"base model {folder} shares no tensor names with the sources (sources have e.g. {example!r}, "
                f"the base {next(iter(sorted(base_names)), '?')!r}); is it the model they were fine-tuned from?"
            )

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def info(self, name: str):
        return self.base.info(self.names[name])

    def get(self, name: str) -> torch.Tensor:
        return self.base.get(self.names[name])

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self.base.get_rows(self.names[name], start, stop)

    def describe(self) -> dict[str, Any]:
        if self.prefix is None:
            how = "same names"
        elif self.prefix.startswith("-"):
            how = f"the sources' prefix {self.prefix[1:]!r} removed"
        else:
            how = f"prefix {self.prefix[1:]!r} added to the sources' names"
        return {"matched_tensors": len(self.names), "names": how}


MIN_CHUNK_BYTES = 256 * 1024
#: On the CPU small chunks are fastest: the K source chunks, the result and a strategy's
#: temporaries then stay in the processor's caches instead of streaming through memory once
#: per elementwise step (2 MiB beat 4, 8 and 20 MiB by 10-35 % on 5 × 1.1 GB models).
MAX_CHUNK_BYTES_CPU = 2 * 1024**2
#: On a GPU larger chunks amortise kernel launches and host-to-device copies.
MAX_CHUNK_BYTES_GPU = MMAP_THRESHOLD_MAX  # larger host buffers would bypass the reused heap


def auto_chunk_bytes(model_bytes: int, num_sources: int, device: torch.device | str = "cpu") -> int:
    """A chunk size that keeps the K source chunks, the base's and the output chunk within
    an eighth of one model's size, capped at 2 MiB per source on the CPU (cache-sized) and
    32 MiB on a GPU, and at least 256 KiB."""
    budget = model_bytes // (8 * (num_sources + 2))
    cap = MAX_CHUNK_BYTES_CPU if torch.device(device).type == "cpu" else MAX_CHUNK_BYTES_GPU
    return max(MIN_CHUNK_BYTES, min(cap, budget))


def _seed_for(seed: int, name: str, start: int) -> int:
    digest = hashlib.sha256(f"{seed}:{name}:{start}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _row_ranges(shape: tuple[int, ...], chunk_bytes: int) -> list[tuple[int, int]]:
    if len(shape) == 0:
        return [(0, 1)]
    rows = shape[0]
    row_bytes = 4 * max(1, math.prod(shape[1:]))
    per_chunk = max(1, chunk_bytes // row_bytes)
    return [(start, min(rows, start + per_chunk)) for start in range(0, max(rows, 1), per_chunk)] if rows else [(0, 0)]


#: Entries compared before the whole chunk by :func:`_same_bytes`.
_HEAD = 1024


def _same_bytes(first: torch.Tensor, other: torch.Tensor) -> bool:
    """Whether two CPU tensors of one shape hold the same bytes in the same dtype.

    Compared as integers of the same width, so ``-0.0`` and ``0.0`` differ and a NaN equals
    only the same NaN; numpy's comparison is twice as fast as ``torch.equal`` on
    chunk-sized tensors. The first entries are compared first: tensors that differ (every
    fine-tuned one) almost always differ there, so they cost microseconds, not a pass.
    """
    if first.dtype != other.dtype:  # a base stored in another dtype
        return False
    kind = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[first.element_size()]
    a, b = first.reshape(-1).view(kind).numpy(), other.reshape(-1).view(kind).numpy()
    return bool(np.array_equal(a[:_HEAD], b[:_HEAD]) and np.array_equal(a, b))


class _TensorMerger:
    """Reads aligned chunks of one tensor from every source and feeds the strategy."""

    def __init__(self, plan: MergePlan, readers: list[TensorSource], base: BaseView | None, chunk_bytes: int,
                 prepared: Any = None):
        self.plan, self.readers, self.base, self.device = plan, readers, base, plan.device
        self.chunk_bytes, self.prepared = chunk_bytes, prepared
        self.weights = torch.tensor([s.weight for s in plan.sources], dtype=torch.float32, device=plan.device)
        #: The weights of each listed tensor group, as tensors on the merge device.
        self._group_weights: dict[str, torch.Tensor] = {}
        #: Raw first chunks that :meth:`agrees` read, by (input index, name, start), until used.
        self._read_ahead: dict[tuple[int, str, int], torch.Tensor] = {}
        #: Seconds :meth:`agrees` spent on tensors that differ, beyond the reads the merge reuses.
        self.check_seconds = 0.0

    def weights_for(self, name: str) -> torch.Tensor:
        """The weights tensor ``name`` is merged with: its group's (:attr:`MergePlan.group_weights`)
        when its group is listed, else the sources' weights."""
        groups = self.plan.group_weights
        if groups is None:
            return self.weights
        from merginguriel_core.groups import tensor_group

        group = tensor_group(name, groups.grouping)
        if group not in groups.groups:
            return self.weights
        if group not in self._group_weights:
            self._group_weights[group] = torch.tensor(groups.groups[group], dtype=torch.float32, device=self.device)
        return self._group_weights[group]

    def _inputs(self, name: str) -> list[TensorSource | BaseView]:
        """The sources, then the base when it has ``name``: what a chunk of ``name`` holds."""
        return [*self.readers, *([self.base] if self.base is not None and name in self.base else [])]

    def _raw(self, index: int, reader: TensorSource | BaseView, name: str, start: int, stop: int,
             scalar: bool) -> torch.Tensor:
        """Rows ``[start, stop)`` of input ``index`` as stored (CPU, own dtype), read once."""
        tensor = self._read_ahead.pop((index, name, start), None)
        if tensor is None:
            tensor = reader.get(name) if scalar else reader.get_rows(name, start, stop)
        return tensor

    def _read(self, index: int, reader: TensorSource | BaseView, name: str, start: int, stop: int,
              scalar: bool) -> torch.Tensor:
        tensor = self._raw(index, reader, name, start, stop, scalar)
        return tensor.to(device=self.device, dtype=torch.float32, non_blocking=True)

    def _check_finite(self, name: str, start: int, stop: int, sources: list[torch.Tensor],
                      base: torch.Tensor | None) -> None:
        """Every input chunk must be finite: a NaN or inf in one source would pass silently
        through sign elections and magnitude thresholds. One reduction per input and one
        device sync per chunk; the exact check runs only when a sum is not finite."""
        inputs = [*sources, *([base] if base is not None else [])]
        if bool(torch.isfinite(torch.stack([tensor.sum() for tensor in inputs])).all()):
            return
        owners = [f"model {s.locale} ({s.path})" for s in self.plan.sources] + [f"the base model {self.plan.base}"]
        for owner, tensor in zip(owners, inputs):
            if not bool(torch.isfinite(tensor).all()):
                where = f" (rows {start}:{stop})" if tensor.dim() and stop - start < self.readers[0].info(name).shape[0] else ""
                raise TensorFileError(f"tensor {name} of {owner} holds NaN or inf values{where}; it cannot be merged")

    def agrees(self, name: str, shape: tuple[int, ...]) -> bool:
        """Whether every input of ``name`` (two at least: the sources, and the base where it
        has the tensor) holds the same bytes. Reads chunk by chunk and stops at the first
        difference; the first chunk's reads are kept for the merge or the copy that follows."""
        inputs = self._inputs(name)
        if len(inputs) < 2:
            return False
        scalar, started, reused = len(shape) == 0, time.perf_counter(), 0.0
        for position, (start, stop) in enumerate(_row_ranges(shape, self.chunk_bytes)):
            first = None
            for index, reader in enumerate(inputs):
                if position == 0:  # kept: the merge (or the copy) does not read it again
                    began = time.perf_counter()
                    tensor = self._read_ahead[(index, name, start)] = self._raw(index, reader, name, start, stop,
                                                                                scalar)
                    reused += time.perf_counter() - began
                else:
                    tensor = self._raw(index, reader, name, start, stop, scalar)
                if first is None:
                    first = tensor
                elif not _same_bytes(first, tensor):
                    self.check_seconds += time.perf_counter() - started - reused
                    return False
        return True

    def agreed_chunks(self, name: str, shape: tuple[int, ...]) -> Iterator[torch.Tensor]:
        """The chunks of a tensor on which every input agrees, read from the first source
        (checked finite, as merged chunks are)."""
        scalar = len(shape) == 0
        for start, stop in _row_ranges(shape, self.chunk_bytes):
            tensor = self._raw(0, self.readers[0], name, start, stop, scalar)
            self._check_finite(name, start, stop, [tensor.to(torch.float32)], None)
            yield tensor

    def forget(self) -> None:
        """Drop read-ahead chunks that nothing used."""
        self._read_ahead.clear()

    def chunks(self, name: str, shape: tuple[int, ...], ranges: list[tuple[int, int]]) -> Iterator[Chunk]:
        scalar = len(shape) == 0
        inputs = self._inputs(name)
        has_base = len(inputs) > len(self.readers)
        for start, stop in ranges:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(_seed_for(self.plan.seed, name, start))
            sources = [self._read(i, r, name, start, stop, scalar) for i, r in enumerate(self.readers)]
            base = self._read(len(self.readers), self.base, name, start, stop, scalar) if has_base else None
            self._check_finite(name, start, stop, sources, base)
            yield Chunk(
                name=name,
                start=start,
                stop=stop,
                sources=sources,
                base=base,
                weights=self.weights_for(name),
                params=self.plan.params,
                generator=generator,
                prepared=self.prepared,
            )

    def job(self, name: str, shape: tuple[int, ...]) -> TensorJob:
        """A job whose chunks stream from disk; a tensor that fits one chunk is read once."""
        ranges = _row_ranges(shape, self.chunk_bytes)
        if len(ranges) == 1:
            cached: list[Chunk] = []

            def chunks() -> Iterator[Chunk]:
                if not cached:
                    cached.extend(self.chunks(name, shape, ranges))
                else:  # a fresh generator state, so every pass sees the same random draws
                    cached[0].generator.manual_seed(_seed_for(self.plan.seed, name, cached[0].start))
                return iter(cached)
        else:
            def chunks() -> Iterator[Chunk]:
                return self.chunks(name, shape, ranges)

        return TensorJob(
            name=name,
            shape=shape,
            weights=self.weights_for(name),
            params=self.plan.params,
            has_base=self.base is not None and name in self.base,
            _chunks=chunks,
            prepared=self.prepared,
            num_chunks=len(ranges),
        )


def _copy_side_files(source: Path, destination: Path, reader: Any = None) -> list[str]:
    """Copy config, tokenizer and other non-weight files of ``source`` into ``destination``.

    For an adapter folder (``reader`` an :class:`~merginguriel_core.adapters.AdapterSource`),
    its base model's files first, then the adapter folder's own (a ``config.json`` there, with
    the labels, wins), never the adapter's config or card: the merged folder is a whole model."""
    from merginguriel_core.adapters import ADAPTER_CONFIG, AdapterSource

    folders = [reader.base.path, source] if isinstance(reader, AdapterSource) else [source]
    copied = []
    for folder in folders:
        for item in sorted(folder.iterdir()):
            if not item.is_file() or item.name in _SKIPPED_FILES or item.name.endswith(_WEIGHT_SUFFIXES):
                continue
            if item.name.startswith("merge_details") or (len(folders) > 1 and item.name in (ADAPTER_CONFIG, "README.md")):
                continue
            shutil.copy2(item, destination / item.name)
            if item.name not in copied:
                copied.append(item.name)
    return copied


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a merge's numbers."""
    import importlib.metadata

    versions = {}
    for name in ("merginguriel", "torch", "safetensors", "transformers", "numpy", "lang2vec"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _details_text(details: Mapping[str, Any]) -> str:
    lines = ["MergingUriel merge", "=" * 18]
    for key in ("target", "weighting", "strategy", "base_model", "device", "dtype"):
        if details.get(key) is not None:
            lines.append(f"{key.replace('_', ' ').capitalize():<12} {details[key]}")
    if details.get("params"):
        lines.append("Parameters   " + ", ".join(f"{k}={v}" for k, v in details["params"].items()))
    lines += ["", f"{'Source':<12} {'Weight':>8}  Path"]
    for source in details["sources"]:
        lines.append(f"{source['locale']:<12} {source['weight']:>8.4f}  {source['path']}")
    if details.get("group_weights"):
        from merginguriel_core.groups import GroupWeights

        groups = GroupWeights.from_json(details["group_weights"])
        lines += ["", f"Weights per tensor group ({groups.grouping}; {GROUP_WEIGHTS_PLOT})", groups.table()]
    lines += ["", "Packages     " + ", ".join(f"{k} {v}" for k, v in details["packages"].items())]
    return "\n".join(lines) + "\n"


class _Sink(Protocol):
    """Where merged tensors go, in layout order: whole (:meth:`write`) or a few rows at a
    time (:meth:`write_rows`). :class:`~merginguriel_core.io.ShardedSafetensorsWriter` is one."""

    def write(self, name: str, tensor: torch.Tensor) -> None: ...

    def write_rows(self, name: str, rows: torch.Tensor) -> None: ...


class _StateDictSink:
    """A :class:`_Sink` into CPU tensors allocated up front from the layout: ``tensors`` is
    the merged state dict once every tensor is written."""

    def __init__(self, layout: Iterable[tuple[str, torch.dtype, tuple[int, ...]]]):
        self.tensors = {name: torch.empty(shape, dtype=dtype) for name, dtype, shape in layout}
        self._rows_done: dict[str, int] = {}

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Tensor ``name`` whole."""
        self.tensors[name].copy_(tensor)

    def write_rows(self, name: str, rows: torch.Tensor) -> None:
        """The next rows of tensor ``name`` (a 0-d tensor is one chunk)."""
        target = self.tensors[name]
        if target.dim() == 0:
            target.copy_(rows)
            return
        done = self._rows_done.get(name, 0)
        target[done:done + rows.shape[0]].copy_(rows)
        self._rows_done[name] = done + rows.shape[0]


class _Both:
    """A :class:`_Sink` that writes to two sinks."""

    def __init__(self, first: _Sink, second: _Sink):
        self.sinks = (first, second)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        for sink in self.sinks:
            sink.write(name, tensor)

    def write_rows(self, name: str, rows: torch.Tensor) -> None:
        for sink in self.sinks:
            sink.write_rows(name, rows)


@dataclass
class _Counts:
    """What :func:`_merge_all` did."""

    bytes: int = 0
    agreed_tensors: int = 0
    agreed_bytes: int = 0
    #: Seconds the agreement check cost on tensors that differ (:attr:`_TensorMerger.check_seconds`).
    check_seconds: float = 0.0

    def details(self, shortcut: bool) -> dict[str, Any]:
        return {"agreement_shortcut": shortcut, "agreed_tensors": self.agreed_tensors,
                "agreed_bytes": self.agreed_bytes, "agreement_check_seconds": round(self.check_seconds, 3)}


def _shortcut(plan: MergePlan) -> bool:
    """Whether tensors on which every input agrees are copied (see :attr:`MergePlan.agreement_shortcut`)."""
    return plan.agreement_shortcut and plan.strategy.keeps_agreement


def _merge_all(plan: MergePlan, merger: _TensorMerger, layout: list, sink: _Sink) -> _Counts:
    """Merge every tensor of ``layout`` in order, streaming each chunk to ``sink``; a tensor
    on which every input agrees is copied (with :func:`_shortcut`)."""
    first = merger.readers[0]
    counts = _Counts()
    shortcut = _shortcut(plan)
    total = sum(first.info(name).nbytes for name, _, _ in layout)
    with tqdm(total=total, unit="B", unit_scale=True, desc="merging", disable=not plan.progress) as bar:
        for name, dtype, shape in layout:
            nbytes = first.info(name).nbytes
            if not dtype.is_floating_point:
                # Integer and boolean buffers (position ids, masks) are not averaged: they are
                # taken from the highest-weighted source, which the others must equal in shape.
                sink.write(name, first.get(name))
            elif shortcut and merger.agrees(name, shape):
                for tensor in merger.agreed_chunks(name, shape):
                    tensor = tensor if tensor.dtype == dtype else tensor.to(torch.float32).to(dtype)
                    _write_chunk(sink, name, shape, tensor)
                counts.agreed_tensors += 1
                counts.agreed_bytes += nbytes
            else:
                _merge_tensor(plan, merger, name, dtype, shape, sink)
            merger.forget()
            counts.bytes += nbytes
            bar.update(nbytes)
    counts.check_seconds = merger.check_seconds
    return counts


def _merge_tensor(plan: MergePlan, merger: _TensorMerger, name: str, dtype: torch.dtype, shape: tuple[int, ...],
                  sink: _Sink) -> None:
    """Merge one floating-point tensor chunk by chunk into ``sink``."""
    job = merger.job(name, shape)
    statistics = plan.strategy.tensor_statistics(job)
    for chunk in job.chunks():
        merged = plan.strategy.merge_chunk(chunk, statistics)
        expected = chunk.sources[0].shape
        if tuple(merged.shape) != tuple(expected):
            raise ConfigError(
                f"strategy {plan.strategy.name!r} returned shape {list(merged.shape)} "
                f"for {name} rows {chunk.start}:{chunk.stop}, expected {list(expected)}"
            )
        # One reduction instead of a mask the size of the chunk: a sum is finite
        # unless an entry is NaN/inf (or huge values overflow, checked exactly).
        if not math.isfinite(float(merged.sum())) and not bool(torch.isfinite(merged).all()):
            _explain_non_finite(plan, chunk, name)
        _write_chunk(sink, name, shape, merged.to(dtype).cpu())
        del chunk, merged  # free this chunk before the next one is read


def _write_chunk(sink: _Sink, name: str, shape: tuple[int, ...], rows: torch.Tensor) -> None:
    if len(shape) == 0:
        sink.write(name, rows.reshape(()))
    else:
        sink.write_rows(name, rows)


def _explain_non_finite(plan: MergePlan, chunk: Chunk, name: str) -> None:
    """Raise an error naming the model whose tensor holds NaN/inf, else the strategy."""
    for source, tensor in zip(plan.sources, chunk.sources):
        if not bool(torch.isfinite(tensor).all()):
            raise TensorFileError(f"tensor {name} of model {source.locale} ({source.path}) holds NaN or inf values")
    if chunk.base is not None and not bool(torch.isfinite(chunk.base).all()):
        raise TensorFileError(f"tensor {name} of the base model {plan.base} holds NaN or inf values")
    raise ConfigError(
        f"strategy {plan.strategy.name!r} produced non-finite values in {name}; check the weights and parameters"
    )


def _details(plan: MergePlan, copied: list[str], tensors: int, nbytes: int, seconds: float,
             chunk_bytes: int) -> dict[str, Any]:
    details: dict[str, Any] = {"target": None, "weighting": None}
    details.update(plan.details)
    details.update(
        {
            "strategy": plan.strategy.name,
            "params": dict(plan.params),
            "base_model": str(plan.base) if plan.base is not None else None,
            "sources": [
                {"locale": s.locale, "path": str(s.path), "weight": s.weight, **({"origin": s.origin} if s.origin else {})}
                for s in plan.sources
            ],
            "device": str(plan.device),
            "dtype": plan.dtype,
            "seed": plan.seed,
            "chunk_bytes": chunk_bytes,
            "data": plan.data.describe() if plan.data is not None else None,
            "group_weights": plan.group_weights.to_json() if plan.group_weights is not None else None,
            "tensors": tensors,
            "bytes": nbytes,
            "seconds": round(seconds, 3),
            "copied_files": copied,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "packages": package_versions(),
        }
    )
    return details


def run_merge(plan: MergePlan) -> MergeSummary:
    """Merge and write ``plan`` (from :func:`merginguriel_core.plan.plan_merge`, which checked
    it); the output appears only when complete. The plan is only read."""
    if not isinstance(plan, MergePlan):
        raise TypeError(f"run_merge takes a MergePlan (from plan_merge), not {type(plan).__name__}")
    if plan.output is None:
        raise ConfigError("this merge plan has no output folder; plan it with one to run it")
    started = time.perf_counter()
    _, details = _run(plan, plan.output, in_memory=False)
    return MergeSummary(plan.output, details["tensors"], details["bytes"], time.perf_counter() - started,
                        str(plan.device), details)


def merge_state_dict(plan: MergePlan, *, keep: str | Path | None = None,
                     details: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The merged model of ``plan`` as CPU tensors (name -> tensor, in the sources' order),
    bit-identical to what :func:`run_merge` writes: the same checks, strategy preparation,
    seeds and chunks, streamed into tensors allocated once instead of a file.

    ``plan.output`` is not used (it may be ``None``). ``keep`` also writes the merged model
    to that folder, as :func:`run_merge` would (checked first like an output, atomically
    placed, ``plan.overwrite`` applies); ``details``, when given, is filled with what
    ``merge_details.json`` records (counts, ``agreed_tensors``, seconds, ...).
    """
    if not isinstance(plan, MergePlan):
        raise TypeError(f"merge_state_dict takes a MergePlan (from plan_merge), not {type(plan).__name__}")
    if keep is not None:
        check_output(Path(keep), plan.overwrite, merge_inputs(plan.sources, plan.base))
    state, facts = _run(plan, Path(keep) if keep is not None else None, in_memory=True)
    if details is not None:
        details.update(facts)
    assert state is not None
    return state


def _run(plan: MergePlan, output: Path | None, in_memory: bool) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]]:
    """Merge ``plan`` into a folder at ``output`` (placed when complete), into memory, or
    both; return the tensors (``in_memory``) and the merge's details."""
    reuse_freed_buffers()
    started = time.perf_counter()
    with ExitStack() as stack:
        from merginguriel_core.adapters import check_adapters, open_model

        readers = [stack.enter_context(open_model(s.path)) for s in plan.sources]
        check_adapters(readers, [s.locale for s in plan.sources])
        base_file = stack.enter_context(TensorSource(plan.base)) if plan.base is not None else None
        base = BaseView(base_file, readers[0].keys(), plan.base) if base_file is not None else None
        check_compatible(list(plan.sources), readers, base)
        chunk_bytes = plan.chunk_bytes or auto_chunk_bytes(readers[0].total_bytes(), len(readers), plan.device)
        adapter = _merged_adapter(plan, readers)
        layout = _layout(plan, readers[0], adapter)
        memory = _StateDictSink(layout) if in_memory and adapter is None else None
        tmp_dir = None
        if output is not None:
            needed = sum(math.prod(shape) * dtype.itemsize for _, dtype, shape in layout)
            tmp_dir = stack.enter_context(
                staged_folder(output, overwrite=plan.overwrite, what=f"merged {plan.output_format}",
                              needed_bytes=needed if adapter is None else 0))
        prepared = plan.strategy.prepare(
            MergeContext(plan.sources, plan.base, plan.params, plan.device, plan.data, plan.progress))
        if hasattr(prepared, "close"):
            stack.callback(prepared.close)
        merger = _TensorMerger(plan, readers, base, chunk_bytes, prepared)
        if adapter is not None:
            adapter.weights_for = merger.weights_for
            counts, copied = _merge_all(plan, merger, layout, adapter), []
            adapter.finish()
            if tmp_dir is not None:
                copied = _write_adapter(adapter, plan.sources[0].path, tmp_dir)
        elif tmp_dir is not None:
            metadata = {"format": "pt", "merged_by": "merginguriel", "strategy": plan.strategy.name}
            with ShardedSafetensorsWriter(tmp_dir, layout, max_shard_bytes=plan.max_shard_bytes,
                                          metadata=metadata) as writer:
                counts = _merge_all(plan, merger, layout, writer if memory is None else _Both(memory, writer))
            copied = _copy_side_files(plan.sources[0].path, tmp_dir, readers[0])
        else:
            assert memory is not None
            counts, copied = _merge_all(plan, merger, layout, memory), []
        details = _details(plan, copied, len(layout), counts.bytes, time.perf_counter() - started, chunk_bytes)
        details.update(counts.details(_shortcut(plan)))
        state = memory.tensors if memory is not None else None
        if adapter is not None:
            details["output"] = adapter.describe()
            state = adapter.applied_state() if in_memory else None
        if hasattr(prepared, "describe"):
            details["statistics"] = prepared.describe()
        if base is not None:
            details["base_tensors"] = {**base.describe(), "source_tensors": len(layout)}
        if tmp_dir is not None:
            (tmp_dir / "merge_details.json").write_text(json.dumps(details, indent=2) + "\n", encoding="utf-8")
            (tmp_dir / "merge_details.txt").write_text(_details_text(details), encoding="utf-8")
            if plan.group_weights is not None:
                plan.group_weights.plot(tmp_dir / GROUP_WEIGHTS_PLOT,
                                        f"Merge weights per tensor group ({plan.strategy.name})")
    return state, details


def _layout(plan: MergePlan, first: TensorSource, adapter: Any = None) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """``(name, output dtype, shape)`` of every tensor merged, in the first source's order:
    all of them, or for a merged ``adapter`` the tensors it holds (adapted weights in float32,
    factored afterwards)."""
    def dtype(name: str) -> torch.dtype:
        own = first.info(name).dtype
        if adapter is not None and name in first.factors:
            return torch.float32
        return DTYPES[plan.dtype] if plan.dtype != "auto" and own.is_floating_point else own

    names = first.keys() if adapter is None else adapter.merged_names()
    return [(name, dtype(name), first.info(name).shape) for name in names]


def _merged_adapter(plan: MergePlan, readers: list[Any]):
    """The :class:`~merginguriel_core.adapters.MergedAdapter` a plan with ``output_format
    adapter`` merges into (``None`` for a whole model)."""
    from merginguriel_core.adapters import AdapterSource, MergedAdapter

    if plan.output_format != "adapter":
        return None
    for source, reader in zip(plan.sources, readers):
        if not isinstance(reader, AdapterSource):
            raise ConfigError(f"--output-format adapter needs adapter sources; {source.locale} ({source.path}) "
                              f"is a whole model (use --output-format model)")
    concatenate = plan.strategy.name == "linear" and plan.adapter_rank is None
    return MergedAdapter(readers, plan.adapter_rank, concatenate, device=plan.device)


def _write_adapter(adapter: Any, first: Path, folder: Path) -> list[str]:
    """The merged adapter's files in ``folder``: weights, config, and the first source's
    side files (its classifier ``config.json``, tokenizer)."""
    from safetensors.torch import save_file

    from merginguriel_core.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    copied = _copy_side_files(first, folder)
    (folder / "README.md").unlink(missing_ok=True)  # the first source's model card
    save_file(adapter.tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt", "merged_by": "merginguriel"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(adapter.config(), indent=2) + "\n", encoding="utf-8")
    return [name for name in copied if name not in (ADAPTER_CONFIG, "README.md")]
