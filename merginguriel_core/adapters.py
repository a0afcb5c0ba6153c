"""LoRA adapter folders (peft's format) read as whole models, tensor by tensor.

A peft LoRA folder holds ``adapter_config.json`` and ``adapter_model.safetensors``: for each
adapted weight W of the base model, factors ``A`` (r × in) and ``B`` (out × r), so that the
fine-tuned weight is W + s·B·A with s = lora_alpha / r (lora_alpha / √r with rsLoRA); the
modules it trains in full (the classifier head, ``modules_to_save``) are stored whole.
:class:`AdapterSource` serves such a folder over its base model with the reading interface of
:class:`~merginguriel_core.io.TensorSource` (``keys``, ``info``, ``get``, ``get_rows``), so
the merge engine and every strategy see an ordinary model: rows ``[start, stop)`` of an
adapted weight are the base's rows plus s·B[start:stop]·A, computed for those rows only.

:func:`open_model` opens a source folder either way; the merge engine uses it, so a merge's
sources may be adapter folders (all on the same base, adapting the same modules:
:func:`check_adapters`). :class:`MergedAdapter` turns a merge of adapter sources back into
an adapter (``--output-format adapter``): the exact concatenation of the sources' factors
for ``linear``, else rank-r factors of the merged ΔW by truncated SVD, as peft's
``add_weighted_adapter`` builds them (``cat``; ``svd``, ``ties_svd``, ``dare_linear_svd``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merginguriel_core.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: How peft prefixes the model's tensor names in an adapter file.
PEFT_PREFIX = "base_model.model."


def is_adapter(folder: str | Path) -> bool:
    """Whether ``folder`` is a peft adapter folder (it has ``adapter_config.json``)."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class LoraConfig:
    """What an adapter folder's ``adapter_config.json`` says that the maths needs."""

    base_model: str | None
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    modules_to_save: tuple[str, ...]
    rslora: bool = False

    @property
    def scale(self) -> float:
        """s in W + s·B·A."""
        return self.alpha / math.sqrt(self.rank) if self.rslora else self.alpha / self.rank

    @classmethod
    def read(cls, folder: str | Path) -> "LoraConfig":
        path = Path(folder) / ADAPTER_CONFIG
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot read {path}: {error}") from None
        if not isinstance(data, dict):
            raise ModelError(f"{path} is not a JSON object")
        kind = data.get("peft_type")
        if kind != "LORA":
            raise ModelError(f"{path}: peft_type {kind!r} is not supported; only LORA adapters are")
        for flag in ("use_dora", "fan_in_fan_out", "lora_bias"):
            if data.get(flag):
                raise ModelError(f"{path}: {flag} adapters are not supported")
        if data.get("rank_pattern") or data.get("alpha_pattern"):
            raise ModelError(f"{path}: per-module ranks or alphas (rank_pattern, alpha_pattern) are not supported")
        rank = data.get("r")
        if not isinstance(rank, int) or rank < 1:
            raise ModelError(f"{path}: r must be a whole number >= 1, not {rank!r}")
        targets = data.get("target_modules") or ()
        targets = (targets,) if isinstance(targets, str) else tuple(sorted(targets))
        return cls(data.get("base_model_name_or_path"), rank, float(data.get("lora_alpha", rank)), targets,
                   tuple(sorted(data.get("modules_to_save") or ())), bool(data.get("use_rslora")))


class AdapterSource:
    """A LoRA adapter folder read as the whole model it makes of ``base`` (a folder).

    Names are the adapted model's (``roberta.encoder.layer.0.attention.self.query.weight``,
    ``classifier.dense.weight``). The base's tensors are matched to them as they are, or with
    the one leading component the adapter's names have and the base's lack (an encoder
    checkpoint under a classifier's ``roberta.``).
    """

    def __init__(self, folder: str | Path, base: str | Path):
        from merginguriel_core.io import TensorSource

        self.path, self.config = Path(folder), LoraConfig.read(folder)
        weights = self.path / ADAPTER_WEIGHTS
        if not weights.is_file():
            raise ModelError(f"adapter folder {self.path} has no {ADAPTER_WEIGHTS}")
        self.adapter, self.base = TensorSource(weights), TensorSource(base)
        self.factors: dict[str, tuple[str, str]] = {}  # model name -> (A name, B name) in the adapter file
        self.whole: dict[str, str] = {}  # model name -> name in the adapter file (modules_to_save)
        for key in self.adapter.keys():
            name = key.removeprefix(PEFT_PREFIX)
            if ".lora_embedding_" in name or (".lora_B." in name and name.endswith(".bias")):
                what = "LoRA on embeddings" if ".lora_embedding_" in name else "a LoRA bias (lora_bias)"
                raise ModelError(f"adapter {self.path}: {what} is not supported: {key}")
            if ".lora_A." in name:
                module, _, rest = name.partition(".lora_A.")
                other = key.replace(".lora_A.", ".lora_B.")
                if other not in self.adapter:
                    raise ModelError(f"adapter {self.path}: {key} has no lora_B counterpart")
                self.factors[f"{module}.{rest.removeprefix('default.')}"] = (key, other)
            elif ".lora_B." not in name:
                self.whole[name.replace(".modules_to_save.default.", ".")] = key
        self.prefix = self._prefix()
        self._names = [self.prefix + name for name in self.base.keys()
                       if self.prefix + name not in self.whole]
        self._names += sorted(self.whole)
        missing = sorted(set(self.factors) - set(self._names))
        if missing:
            raise ModelError(f"adapter {self.path} adapts {missing[0]}, which base model {base} lacks")

    def _prefix(self) -> str:
        base = set(self.base.keys())
        for name in self.factors:
            if name in base:
                return ""
            head, _, rest = name.partition(".")
            if rest in base:
                return head + "."
        return ""

    def _base_name(self, name: str) -> str:
        return name[len(self.prefix):] if self.prefix and name.startswith(self.prefix) else name

    def keys(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def info(self, name: str):
        if name in self.whole:
            return self.adapter.info(self.whole[name])
        return self.base.info(self._base_name(name))

    def total_bytes(self) -> int:
        return sum(self.info(name).nbytes for name in self._names)

    def delta_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of s·B·A for an adapted weight, float32 (only those rows)."""
        a, b = self.factors[name]
        return self.config.scale * (self.adapter.get_rows(b, start, stop).to(torch.float32)
                                    @ self.adapter.get(a).to(torch.float32))

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        if name in self.whole:
            return self.adapter.get_rows(self.whole[name], start, stop)
        rows = self.base.get_rows(self._base_name(name), start, stop)
        if name not in self.factors:
            return rows
        # float32, not the base's dtype: rounding W + ΔW to a bf16 base's step would swamp the
        # small update (the engine merges in float32 and casts only what it writes).
        return rows.to(torch.float32) + self.delta_rows(name, start, stop)

    def base_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of the base model's tensor under ``name``."""
        return self.base.get_rows(self._base_name(name), start, stop)

    def get(self, name: str) -> torch.Tensor:
        shape = self.info(name).shape
        if not shape:
            return self.adapter.get(self.whole[name]) if name in self.whole else self.base.get(self._base_name(name))
        return self.get_rows(name, 0, shape[0])

    def describe(self) -> dict[str, Any]:
        return {"adapter": str(self.path), "rank": self.config.rank, "alpha": self.config.alpha,
                "scale": self.config.scale, "adapted_tensors": len(self.factors), "whole_tensors": len(self.whole)}

    def close(self) -> None:
        self.adapter.close()
        self.base.close()

    def __enter__(self) -> "AdapterSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


OUTPUT_FORMATS = ("model", "adapter")


def check_output_format(output_format: str, adapter_rank: int | None) -> None:
    """``--output-format`` is one of :data:`OUTPUT_FORMATS`; ``--adapter-rank`` goes with ``adapter``."""
    if output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown --output-format {output_format!r}; allowed: {', '.join(OUTPUT_FORMATS)}")
    if adapter_rank is not None and output_format != "adapter":
        raise ConfigError("--adapter-rank goes with --output-format adapter")
    if adapter_rank is not None and (not isinstance(adapter_rank, int) or adapter_rank < 1):
        raise ConfigError(f"--adapter-rank must be a whole number >= 1, not {adapter_rank!r}")


class MergedAdapter:
    """A merge of adapter sources written as one LoRA adapter (``--output-format adapter``).

    The merge engine streams the merged tensors of the adapted weights (and of the wholly
    trained modules) into it in layout order (:meth:`write`, :meth:`write_rows`, as any sink).
    When an adapted weight is complete its merged update ΔW = merged − base is factored:
    truncated SVD ΔW ≈ (U·S)[:, :r] · Vh[:r] (B = U·S, A = Vh, scale 1, as peft's ``*_svd``
    combinations), keeping one dense layer in memory at a time. With ``concatenate`` (linear
    without a rank) no adapted weight is merged: the factors are stacked, A = [A₁; …; A_K] and
    B = [w₁s₁B₁, …, w_Ks_KB_K], whose product is Σ wₖ sₖ Bₖ Aₖ exactly (peft's ``cat``).
    """

    def __init__(self, readers: list[AdapterSource], rank: int | None, concatenate: bool,
                 weights_for=None, device: Any = "cpu"):
        self.readers, self.first = readers, readers[0]
        self.concatenate = concatenate
        self.rank = sum(r.config.rank for r in readers) if concatenate else (
            rank or max(r.config.rank for r in readers))
        self.weights_for, self.device = weights_for, device
        self.tensors: dict[str, torch.Tensor] = {}  # adapter-file name -> tensor
        self._buffers: dict[str, tuple[torch.Tensor, int]] = {}
        self.energy: dict[str, float] = {}  # model name -> fraction of ‖ΔW‖² the factors keep

    def merged_names(self) -> list[str]:
        """The model tensors the engine merges into this adapter, in the first source's order."""
        names = set(self.first.whole) | (set() if self.concatenate else set(self.first.factors))
        return [name for name in self.first.keys() if name in names]

    # ------------------------------------------------------------------ the sink
    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Tensor ``name`` whole."""
        if tensor.dim() == 0:
            self._complete(name, tensor.detach().to("cpu").clone())
        else:
            self.write_rows(name, tensor)

    def write_rows(self, name: str, rows: torch.Tensor) -> None:
        """The next rows of tensor ``name``."""
        shape = self.first.info(name).shape
        if not shape:
            return self.write(name, rows.reshape(()))
        dtype = torch.float32 if name in self.first.factors else rows.dtype
        buffer, done = self._buffers.pop(name, None) or (torch.empty(shape, dtype=dtype), 0)
        buffer[done:done + rows.shape[0]].copy_(rows)
        done += rows.shape[0]
        if done < shape[0]:
            self._buffers[name] = (buffer, done)
        else:
            self._complete(name, buffer)

    def _complete(self, name: str, merged: torch.Tensor) -> None:
        if name not in self.first.factors:
            self.tensors[self.first.whole[name]] = merged
            return
        delta = merged.sub_(self.first.base_rows(name, 0, merged.shape[0]).to(torch.float32)).to(self.device)
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(self.rank, s.numel())
        total = float(s.square().sum())
        self.energy[name] = float(s[:r].square().sum()) / total if total > 0 else 1.0
        a, b = vh[:r], u[:, :r] * s[:r]
        if r < self.rank:  # a layer narrower than the rank: zero factors pad it (every module has rank r)
            a = torch.cat([a, a.new_zeros(self.rank - r, a.shape[1])])
            b = torch.cat([b, b.new_zeros(b.shape[0], self.rank - r)], dim=1)
        self._store(name, a, b)

    def finish(self) -> None:
        """Stack the factors (``concatenate``); after the engine wrote every merged tensor."""
        if self.concatenate:
            for name in self.first.factors:
                weights = self.weights_for(name)
                a = torch.cat([r.adapter.get(r.factors[name][0]).to(torch.float32) for r in self.readers])
                b = torch.cat([float(w) * r.config.scale * r.adapter.get(r.factors[name][1]).to(torch.float32)
                               for r, w in zip(self.readers, weights)], dim=1)
                self.energy[name] = 1.0
                self._store(name, a, b)
        missing = [n for n in self.first.keys() if (n in self.first.whole and self.first.whole[n] not in self.tensors)
                   or (n in self.first.factors and self.first.factors[n][0] not in self.tensors)]
        if missing:
            raise ModelError(f"the merged adapter lacks {missing[0]}")

    def _store(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        a_key, b_key = self.first.factors[name]
        dtype = self.first.adapter.info(a_key).dtype
        self.tensors[a_key] = a.to("cpu", dtype).contiguous()
        self.tensors[b_key] = b.to("cpu", dtype).contiguous()

    # ------------------------------------------------------------------ the results
    def config(self) -> dict[str, Any]:
        """The first source's ``adapter_config.json`` with the merged rank (scale 1: alpha = r)."""
        data = json.loads((self.first.path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        data.update(r=self.rank, lora_alpha=self.rank, use_rslora=False, rank_pattern={}, alpha_pattern={})
        return data

    def describe(self) -> dict[str, Any]:
        """What merge_details.json records: the rank, how it was reached, the update kept."""
        kept = list(self.energy.values())
        return {"format": "adapter", "sources": len(self.readers), "rank": self.rank, "alpha": float(self.rank),
                "method": "concatenation" if self.concatenate else "truncated_svd",
                "source_ranks": [r.config.rank for r in self.readers],
                "energy_kept_min": round(min(kept), 6) if kept else None,
                "energy_kept_mean": round(sum(kept) / len(kept), 6) if kept else None}

    def applied_state(self, merged: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The whole model the merged adapter makes of the base (name -> tensor): what
        ``peft``'s ``merge_and_unload`` of it gives."""
        state = {}
        for name in self.first.keys():
            info = self.first.info(name)
            if name in self.first.whole:
                state[name] = self.tensors[self.first.whole[name]]
            elif name in self.first.factors:
                a_key, b_key = self.first.factors[name]
                base = self.first.base_rows(name, 0, info.shape[0])
                update = self.tensors[b_key].to(torch.float32) @ self.tensors[a_key].to(torch.float32)
                state[name] = (base.to(torch.float32) + update).to(base.dtype)
            else:
                state[name] = self.first.get(name)
        return state


def adapter_line(facts: dict[str, Any]) -> str:
    """One line on a merged adapter (:meth:`MergedAdapter.describe`): its rank and how exact it is."""
    if facts["method"] == "concatenation":
        return (f"Merged adapter of rank {facts['rank']}: the exact concatenation of {facts['sources']} adapters "
                f"(ranks {'+'.join(str(r) for r in facts['source_ranks'])}).")
    if facts.get("energy_kept_mean") is None:  # no adapted weight: only wholly trained modules were merged
        return f"Merged adapter of rank {facts['rank']}: no adapted weights, only the modules it trains whole."
    return (f"Merged adapter of rank {facts['rank']}: truncated SVD of the merged update, keeping "
            f"{100 * facts['energy_kept_mean']:.1f}% of its energy on average (least "
            f"{100 * facts['energy_kept_min']:.1f}%).")


def _named_on_disk(folder: str | Path, named: str) -> Path | None:
    """Where the base ``named`` in adapter ``folder`` is on disk: the path as given when it
    exists, else that path from the adapter's folder when it is a folder there; else ``None``."""
    if Path(named).exists():
        return Path(named)
    beside = Path(folder) / named
    return beside if beside.is_dir() else None


def local_adapter_base(folder: str | Path) -> Path | None:
    """The base model folder an adapter names, if it is on disk (no fetching); ``None`` for a
    hub id or a folder that is not a readable adapter."""
    if not is_adapter(folder):
        return None
    try:
        named = LoraConfig.read(folder).base_model
    except (ModelError, ConfigError):
        return None
    found = _named_on_disk(folder, named) if named else None
    return found if found is not None and found.is_dir() else None


def adapter_base(folder: str | Path) -> Path:
    """The local base model folder an adapter names (relative paths: as given, else from the
    adapter's folder; hub ids fetched)."""
    from merginguriel_core.models import resolve_location

    config = LoraConfig.read(folder)
    if not config.base_model:
        raise ModelError(f"adapter {folder} names no base model (base_model_name_or_path in {ADAPTER_CONFIG})")
    found = _named_on_disk(folder, config.base_model)
    try:
        return resolve_location(str(found) if found is not None else config.base_model)
    except ModelError as error:
        raise ModelError(f"adapter {folder} names base model {config.base_model}, which cannot be found: "
                         f"{error}") from None


def open_model(folder: str | Path):
    """A reader of the model in ``folder``: a :class:`~merginguriel_core.io.TensorSource`, or an
    :class:`AdapterSource` over its base for a LoRA adapter folder."""
    from merginguriel_core.io import TensorSource

    return AdapterSource(folder, adapter_base(folder)) if is_adapter(folder) else TensorSource(folder)


def check_adapters(readers, locales) -> None:
    """Adapter sources of one merge share their base model and their adapted modules."""
    adapters = [(locale, r) for locale, r in zip(locales, readers) if isinstance(r, AdapterSource)]
    for locale, reader in adapters[1:]:
        first_locale, first = adapters[0]
        if reader.base.path.resolve() != first.base.path.resolve():
            raise ModelError(f"adapter sources differ in their base model: {locale} is on {reader.base.path}, "
                             f"{first_locale} on {first.base.path}")
        if sorted(reader.factors) != sorted(first.factors):
            only = sorted(set(reader.factors) ^ set(first.factors))[0]
            raise ModelError(f"adapter sources adapt different modules: {only} is adapted in "
                             f"{locale if only in reader.factors else first_locale} only")
