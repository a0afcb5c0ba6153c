"""Exact k-th largest magnitudes of tensors streamed in chunks, without sorting them.

(Was ``merginguriel_plugins.magnitude_select``.)

The answer is always exact; how fast it comes depends on a random sample (Floyd & Rivest's
idea, "Expected time bounds for selection", CACM 1975):

1. While reading the chunks once, keep a uniform random sample of each stream (2^16
   values). Its order statistics bracket the k-th largest value in a window [lo, hi] that
   holds it with overwhelming probability (six standard deviations of the sample quantile).
2. Count the values above ``hi`` and collect the few inside the window (about 2 % of the
   stream); the k-th largest is then a selection among those alone.

When the whole tensor is one chunk it is already in memory and step 2 runs on it directly:
one read, two comparisons per value. If the window missed (probability ~1e-9) or holds too
many values (heavy ties, e.g. a tensor of zeros), the selection falls back to a two-pass
radix select on the float bits: for non-negative float32 values the IEEE-754 bit pattern,
read as an integer, orders like the value, so counting values by their top 16 bits and then
by the low 16 bits inside the one bucket that holds the answer finds it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    from merginguriel_core.lazy import numpy as np, torch

_BUCKETS = 1 << 16
#: Sample size per stream; the window is ~2·6·sqrt(q(1-q)/SAMPLE) of the values wide.
SAMPLE = 1 << 16
_SIGMAS = 6.0

Passes = Callable[[], Iterable[Sequence["torch.Tensor"]]]


def kth_largest(passes: Passes, queries: Sequence[tuple[int, int]], numel: int) -> list[float]:
    """The exact ``k``-th largest value of stream ``i`` for each query ``(i, k)``.

    Args:
        passes: called once per pass; each call yields, chunk by chunk, a sequence of
            non-negative tensors (one per stream, e.g. |δᵢ| for K models).
        queries: ``(stream index, k)`` pairs, ``1 <= k <= numel``.
        numel: the number of values of every stream (over all its chunks).
    Returns:
        One float per query (``inf`` for ``k == 0``, meaning "nothing is that large").
    """
    results = [math.inf] * len(queries)
    active = _active_queries(queries, numel)
    if not active:
        return results
    sampled = _sample(passes, sorted({stream for _, stream, _ in active}), numel)
    if sampled.whole:  # the sample is every value: select in it directly
        for q, stream, k in active:
            results[q] = _kth_of_array(sampled.values[stream], k)
        return results
    windows = {q: _window(sampled.values[stream], k, numel) for q, stream, k in active}
    if sampled.only_chunk is not None:  # the whole tensor is in memory: resolve each window on it
        for q, stream, k in active:
            results[q] = _kth_in_memory(sampled.only_chunk[stream].reshape(-1), k, windows[q])
        return results
    missed = _resolve_windows(passes, active, windows, results)
    if missed:
        found = _radix_select(passes, [(stream, k) for _, stream, k in missed])
        for (q, _, _), value in zip(missed, found):
            results[q] = value
    return results


#: One query of :func:`kth_largest`: its position in the answer, its stream and its rank k.
_Query = tuple[int, int, int]


@dataclass
class _Sampled:
    """What the first pass over the chunks found."""

    #: stream -> its sample (every value when ``whole``).
    values: dict[int, np.ndarray]
    #: Whether the streams are small enough that the sample holds every value.
    whole: bool
    #: The chunk, when the streams came in exactly one (then they are all in memory).
    only_chunk: Sequence[torch.Tensor] | None


def _active_queries(queries: Sequence[tuple[int, int]], numel: int) -> list[_Query]:
    """The queries with ``k > 0`` as ``(position, stream, k)``; a ``k`` above ``numel`` is an error."""
    active = [(q, stream, k) for q, (stream, k) in enumerate(queries) if k > 0]
    for _, stream, k in active:
        if k > numel:
            raise ValueError(f"k={k} exceeds the {numel} values of stream {stream}")
    return active


def _sample(passes: Passes, streams: Sequence[int], numel: int) -> _Sampled:
    """One pass: a uniform random sample of each stream (all of it when ``numel <= SAMPLE``),
    checking that the chunks hold exactly ``numel`` values."""
    generator = torch.Generator().manual_seed(0)  # only the speed depends on the draw
    # Buffers that live across chunks are allocated once, up front: many small long-lived
    # tensors between the chunk buffers would fragment the heap (gigabytes on a 1 GB model).
    whole = numel <= SAMPLE  # small streams are "sampled" completely: the sample is the answer
    capacity = numel if whole else SAMPLE + 1024
    samples: dict[int, torch.Tensor] = {}
    filled = 0
    first, chunks, seen = None, 0, 0
    for chunk in passes():
        chunks += 1
        first = chunk if chunks == 1 else None
        size = chunk[streams[0]].numel()
        if whole and filled + size > capacity:
            raise ValueError(f"the chunks hold more than the {numel} values announced")
        take = size if whole else min(size, math.ceil(SAMPLE * size / numel), capacity - filled)
        index = None if whole else torch.randint(size, (take,), generator=generator).to(chunk[streams[0]].device)
        for s in streams:
            values = chunk[s].reshape(-1)
            if s not in samples:
                samples[s] = torch.empty(capacity, dtype=_numpy_dtype(values.dtype), device=values.device)
            target = samples[s][filled:filled + take]
            target.copy_(values if whole else values[index])
        filled += take
        seen += size
    if seen != numel:
        raise ValueError(f"the chunks hold {seen} values, not the {numel} announced")
    drawn = {s: samples[s][:filled].cpu().numpy() for s in streams}
    return _Sampled(drawn, whole, first)


def _kth_in_memory(values: torch.Tensor, k: int, window: tuple[float, float, float]) -> float:
    """The k-th largest of ``values`` (flat, in memory): from the window when it holds the
    answer, else by a selection over all of them."""
    above, picked = _split(values, *window[:2])
    if 0 < k - above <= picked.numel():
        return float(picked.kthvalue(picked.numel() - (k - above) + 1).values)
    return float(values.kthvalue(values.numel() - k + 1).values)


def _resolve_windows(passes: Passes, active: Sequence[_Query], windows: dict[int, tuple[float, float, float]],
                     results: list[float]) -> list[_Query]:
    """A second pass: count the values above each window and collect those inside it; fill
    ``results`` for the queries whose window holds the answer and return the others."""
    above, counted, inside = _count_windows(passes, active, windows)
    missed = []
    for q, stream, k in active:
        rank = k - above[q]
        if inside[q] is None or not 0 < rank <= counted[q]:
            missed.append((q, stream, k))
            continue
        if windows[q][0] == windows[q][1]:  # every value in the window equals lo == hi
            results[q] = windows[q][0]
            continue
        values = inside[q][:counted[q]]
        results[q] = float(values.kthvalue(values.numel() - rank + 1).values)
    return missed


def _count_windows(passes: Passes, active: Sequence[_Query], windows: dict[int, tuple[float, float, float]]
                   ) -> tuple[dict[int, int], dict[int, int], dict[int, torch.Tensor | None]]:
    """Per query: how many values lie above its window, how many inside, and those inside
    (``None`` when far more than expected: heavy ties, left to the exact fallback)."""
    above = {q: 0 for q, _, _ in active}
    counted = {q: 0 for q, _, _ in active}
    inside: dict[int, torch.Tensor | None] = {}
    for chunk in passes():
        for q, stream, _ in active:
            lo, hi, expected = windows[q]
            count, picked = _split(chunk[stream].reshape(-1), lo, hi)
            if q not in inside:  # room for 25 % more than expected (10 standard deviations)
                size = 0 if lo == hi else math.ceil(1.25 * expected) + 4096  # a tie: counting suffices
                inside[q] = torch.empty(size, dtype=picked.dtype, device=picked.device)
            buffer = inside[q]
            if lo == hi:
                pass
            elif buffer is not None and counted[q] + picked.numel() <= buffer.numel():
                buffer[counted[q]:counted[q] + picked.numel()].copy_(picked)
            else:
                inside[q] = None  # far more ties than expected: count exactly instead
            above[q] += count
            counted[q] += picked.numel()
    return above, counted, inside


def _kth_of_array(values: np.ndarray, k: int) -> float:
    """The k-th largest entry of a 1-D array (linear time)."""
    position = values.size - k
    return float(np.partition(values, position)[position])


def _window(sample: np.ndarray, k: int, numel: int) -> tuple[float, float, float]:
    """[lo, hi] around the k-th largest of ``numel`` values, from a random ``sample`` of
    them, and about how many of the values it holds."""
    size = sample.size
    quantile = k / numel
    position = quantile * size  # of the k-th largest, counted from the top of the sample
    spread = _SIGMAS * math.sqrt(size * quantile * (1 - quantile)) + 2
    top, bottom = math.floor(position - spread), math.ceil(position + spread)
    # Descending position p is ascending position size - 1 - p; select both in one O(n) pass.
    wanted = sorted({size - 1 - p for p in (top, bottom) if 0 <= p < size})
    ordered = np.partition(sample, wanted) if wanted else sample
    hi = float(ordered[size - 1 - top]) if top >= 0 else math.inf
    lo = float(ordered[size - 1 - bottom]) if bottom < size else -math.inf
    share = (min(bottom, size - 1) - max(top, 0) + 1) / size
    return lo, hi, share * numel


def _numpy_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` itself where numpy has it (exact answers for float64 too), else float32."""
    return dtype if dtype in (torch.float16, torch.float32, torch.float64) else torch.float32


def _split(values: torch.Tensor, lo: float, hi: float) -> tuple[int, torch.Tensor]:
    """How many of ``values`` exceed ``hi``, and those within [lo, hi]."""
    if values.device.type == "cpu" and _numpy_dtype(values.dtype) == values.dtype:
        # numpy's boolean counting and selection are ~3× faster than torch's here
        array = values.numpy()
        above = int(np.count_nonzero(array > hi)) if hi != math.inf else 0
        inside = (array >= lo) & (array <= hi) if hi != math.inf else array >= lo
        return above, torch.from_numpy(array[inside])
    if hi == math.inf:
        return 0, values[values >= lo]
    return int(torch.count_nonzero(values > hi)), values[(values >= lo) & (values <= hi)]


def _bits(values: torch.Tensor) -> torch.Tensor:
    """Non-negative float32 values as int32 keys that order like the values (flat)."""
    return values.detach().to(torch.float32).contiguous().view(torch.int32).flatten()


def _find(counts: torch.Tensor, rank: int) -> tuple[int, int]:
    """Bucket holding the ``rank``-th largest (1-based) and the rank left inside it."""
    from_top = counts.flip(0).cumsum(0)
    index = int(torch.searchsorted(from_top, torch.tensor(rank, dtype=from_top.dtype)))
    above = int(from_top[index - 1]) if index > 0 else 0
    return _BUCKETS - 1 - index, rank - above


def _radix_select(passes: Passes, queries: Sequence[tuple[int, int]]) -> list[float]:
    """Exact k-th largest values by two counting passes over the float bits (any ties)."""
    streams = sorted({stream for stream, _ in queries})
    high = {s: torch.zeros(_BUCKETS, dtype=torch.int64) for s in streams}
    for chunk in passes():
        for s in streams:
            high[s] += torch.bincount(_bits(chunk[s]) >> 16, minlength=_BUCKETS).cpu()
    wanted = {q: (stream, *_find(high[stream], k)) for q, (stream, k) in enumerate(queries)}
    low = {q: torch.zeros(_BUCKETS, dtype=torch.int64) for q in wanted}
    for chunk in passes():
        for s in streams:
            keys = _bits(chunk[s])
            for q, (stream, bucket, _) in wanted.items():
                if stream == s:
                    low[q] += torch.bincount(keys[(keys >> 16) == bucket] & 0xFFFF, minlength=_BUCKETS).cpu()
            del keys
    results = []
    for q, (stream, bucket, rank) in wanted.items():
        lower, _ = _find(low[q], rank)
        key = torch.tensor([(bucket << 16) | lower], dtype=torch.int32)
        results.append(float(key.view(torch.float32)))
    return results
