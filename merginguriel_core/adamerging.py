"""AdaMerging (Yang et al., ICLR 2024, https://arxiv.org/abs/2310.02575) on unlabelled target text.

The merged model is θ = Σₖ wₖ,g θₖ for every tensor of group g (a layer, see
:mod:`merginguriel_core.groups`): with each group's weights summing to 1 this is task
arithmetic θ_base + Σₖ wₖ,g τₖ with coefficients that sum to 1, and no base model is needed.
The weights are a softmax of free logits per group (so they stay non-negative and sum to 1),
started from another weighting's weights, and moved by Adam to lower the mean entropy of the
merged model's predictions on the target text. No label is read.

Memory: only the tensors on which the sources differ are tuned; a tensor every source holds
byte for byte (embeddings frozen during fine-tuning) is the same in any merge and is left in
the one model loaded. So the run holds one model plus K copies of the differing tensors
(stacked on the device), plus one merged copy and its gradient during a step; never K whole
models when the sources share their embeddings.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from merginguriel_core.errors import ModelError
from merginguriel_core.groups import GroupWeights, group_order, tensor_group

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch


@dataclass
class AdaMergingRun:
    """What :func:`learn_group_weights` found and what it cost."""

    group_weights: GroupWeights
    entropy_before: float
    entropy_after: float
    #: The mean entropy of each step's batch, before that step's update.
    entropies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    tuned_tensors: int = 0
    tuned_bytes: int = 0
    fixed_tensors: int = 0
    peak_bytes: int | None = None
    #: The share of the text's tokenizer pieces that are the unknown token.
    unknown_share: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {"entropy_before": round(self.entropy_before, 6), "entropy_after": round(self.entropy_after, 6),
                "entropies": [round(e, 6) for e in self.entropies], "seconds": round(self.seconds, 3),
                "seconds_per_step": round(self.seconds_per_step, 4), "tuned_tensors": self.tuned_tensors,
                "tuned_bytes": self.tuned_bytes, "fixed_tensors": self.fixed_tensors, "peak_bytes": self.peak_bytes}


def _differing(paths: Sequence[Path], names: list[str], device: torch.device) -> tuple[dict[str, torch.Tensor], int]:
    """The floating-point tensors on which the sources differ, each stacked as (K, ...) float32
    on ``device``, and how many agree."""
    from merginguriel_core.io import TensorSource
    from merginguriel_core.merge import _same_bytes

    stacked: dict[str, torch.Tensor] = {}
    fixed = 0
    readers = [TensorSource(path) for path in paths]
    try:
        for name in names:
            if not readers[0].info(name).dtype.is_floating_point:
                continue
            first = readers[0].get(name)
            # Compared one source at a time, so an agreed tensor (a frozen embedding matrix) is
            # never held K times; a differing one is read again, whole, to be stacked.
            if all(_same_bytes(first, reader.get(name)) for reader in readers[1:]):
                fixed += 1
                continue
            stacked[name] = torch.stack([first.to(torch.float32)] + [reader.get(name).to(torch.float32)
                                                                     for reader in readers[1:]]).to(device)
    finally:
        for reader in readers:
            reader.close()
    return stacked, fixed


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean prediction entropy of a batch of logits (N, C)."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def learn_group_weights(
    sources: Sequence[tuple[str, Path]],
    start: Sequence[float],
    sentences: Sequence[str],
    *,
    grouping: str = "layer",
    steps: int = 30,
    learning_rate: float = 0.05,
    batch_size: int = 16,
    max_length: int = 128,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> AdaMergingRun:
    """Learn per-group merge weights of ``sources`` (``(locale, folder)``) from ``start``
    (one weight per source) by entropy minimisation on ``sentences``.

    Returns the group weights (each group summing to 1) of the groups that hold a tensor on
    which the sources differ; a group whose tensors all agree is not listed (its merge is the
    same under any weights). With ``steps=0`` the weights are ``start`` in every group.
    """
    from torch.func import functional_call

    from merginguriel_core.io import TensorSource
    from merginguriel_core.statistics import load_classifier

    started = time.perf_counter()
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    locales = [locale for locale, _ in sources]
    paths = [Path(path) for _, path in sources]
    with TensorSource(paths[0]) as first:
        names = first.keys()
    stacked, fixed = _differing(paths, names, device)
    from merginguriel_core.target_text import unknown_share

    model, tokenizer = load_classifier(paths[0], device)
    model.eval().requires_grad_(False)
    unknown = unknown_share(tokenizer, sentences)
    own = dict(model.state_dict())
    foreign = [name for name in stacked if name not in own]
    if foreign:
        raise ModelError(f"tensor {foreign[0]} of {paths[0]} is not a tensor of the model transformers builds from it; "
                         f"adamerging cannot tune it")
    groups = sorted({tensor_group(name, grouping) for name in stacked}, key=group_order)
    index = {group: i for i, group in enumerate(groups)}
    rows = torch.tensor([index[tensor_group(name, grouping)] for name in stacked], dtype=torch.long)
    start_weights = torch.tensor([max(float(w), 1e-12) for w in start], dtype=torch.float32)
    start_weights = start_weights / start_weights.sum()
    logits = torch.nn.Parameter(start_weights.log().repeat(len(groups), 1).to(device))
    optimiser = torch.optim.Adam([logits], lr=learning_rate)
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [[sentences[i] for i in order[at:at + batch_size]] for at in range(0, len(order), batch_size)]
    from merginguriel_core.training import token_limit

    max_length = token_limit(model, max_length)
    encoded = [{k: v.to(device) for k, v in tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                                                       return_tensors="pt").items()} for batch in batches]

    def merged(weights: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: torch.tensordot(weights[rows[i]], tensor, dims=1) for i, (name, tensor) in enumerate(stacked.items())}

    def entropy_of(inputs: dict[str, torch.Tensor], params: dict[str, torch.Tensor]) -> torch.Tensor:
        return _entropy(functional_call(model, params, args=(), kwargs=inputs).logits)

    def mean_entropy() -> float:
        with torch.no_grad():
            params = merged(torch.softmax(logits, dim=-1))
            total = sum(float(entropy_of(inputs, params)) * len(batch) for inputs, batch in zip(encoded, batches))
        return total / max(1, len(sentences))

    before = mean_entropy() if groups else math.nan
    trace: list[float] = []
    stepping = time.perf_counter()
    for step in range(steps if groups else 0):
        optimiser.zero_grad()
        loss = entropy_of(encoded[step % len(encoded)], merged(torch.softmax(logits, dim=-1)))
        loss.backward()
        optimiser.step()
        trace.append(float(loss.detach()))
    per_step = (time.perf_counter() - stepping) / len(trace) if trace else 0.0
    after = mean_entropy() if groups else math.nan
    final = torch.softmax(logits.detach(), dim=-1).cpu().double()
    weights = GroupWeights(grouping, tuple(locales),
                           {group: tuple(float(w) for w in final[i] / final[i].sum()) for group, i in index.items()})
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return AdaMergingRun(weights, before, after, trace, time.perf_counter() - started, per_step, len(stacked),
                         sum(t.numel() * t.element_size() for t in stacked.values()), fixed, peak, unknown)
