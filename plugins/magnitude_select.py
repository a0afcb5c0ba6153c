"""Exact k-th largest magnitudes of tensors streamed in chunks: a two-pass radix select.

For non-negative float32 values the IEEE-754 bit pattern, read as an integer, orders like the
value. The first pass counts values by their top 16 bits (65,536 buckets); the bucket that
holds the k-th largest is then resolved by counting its low 16 bits in a second pass. Memory
is two histograms per query, whatever the tensor size; no sort, no copy of the tensor.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

_BUCKETS = 1 << 16


def _bits(values: torch.Tensor) -> torch.Tensor:
    """Non-negative float32 values as int32 keys that order like the values (flat)."""
    return values.detach().to(torch.float32).contiguous().view(torch.int32).flatten()


def _find(counts: torch.Tensor, rank: int) -> tuple[int, int]:
    """Bucket holding the ``rank``-th largest (1-based) and the rank left inside it."""
    from_top = counts.flip(0).cumsum(0)
    index = int(torch.searchsorted(from_top, torch.tensor(rank, dtype=from_top.dtype)))
    above = int(from_top[index - 1]) if index > 0 else 0
    return _BUCKETS - 1 - index, rank - above


def kth_largest(passes: Callable[[], Iterable[Sequence[torch.Tensor]]], queries: Sequence[tuple[int, int]]) -> list[float]:
    """The exact ``k``-th largest value of stream ``i`` for each query ``(i, k)``.

    Args:
        passes: called once per pass; each call yields, chunk by chunk, a sequence of
            non-negative tensors (one per stream, e.g. |δᵢ| for K models).
        queries: ``(stream index, k)`` pairs, ``1 <= k <= number of values of that stream``.
    Returns:
        One float per query (``inf`` for ``k == 0``, meaning "nothing is that large").
    """
    results = [float("inf")] * len(queries)
    active = [(q, stream, k) for q, (stream, k) in enumerate(queries) if k > 0]
    if not active:
        return results
    iterator = iter(passes())
    first = next(iterator, None)
    if first is not None and next(iterator, None) is None:
        # The whole tensor is one chunk, already in memory: select directly (O(n), no sort).
        for q, stream, k in active:
            values = first[stream].flatten()
            if k > values.numel():
                raise ValueError(f"k={k} exceeds the {values.numel()} values of stream {stream}")
            results[q] = float(values.kthvalue(values.numel() - k + 1).values)
        return results
    del first, iterator
    streams = sorted({stream for _, stream, _ in active})
    high = {s: torch.zeros(_BUCKETS, dtype=torch.int64) for s in streams}
    for chunk in passes():
        for s in streams:
            high[s] += torch.bincount(_bits(chunk[s]) >> 16, minlength=_BUCKETS).cpu()
    wanted = {}
    for q, stream, k in active:
        if k > int(high[stream].sum()):
            raise ValueError(f"k={k} exceeds the {int(high[stream].sum())} values of stream {stream}")
        wanted[q] = (stream, *_find(high[stream], k))
    low = {q: torch.zeros(_BUCKETS, dtype=torch.int64) for q in wanted}
    for chunk in passes():
        for s in streams:
            keys = _bits(chunk[s])
            for q, (stream, bucket, _) in wanted.items():
                if stream == s:
                    low[q] += torch.bincount(keys[(keys >> 16) == bucket] & 0xFFFF, minlength=_BUCKETS).cpu()
            del keys
    for q, (stream, bucket, rank) in wanted.items():
        lower, _ = _find(low[q], rank)
        key = torch.tensor([(bucket << 16) | lower], dtype=torch.int32)
        results[q] = float(key.view(torch.float32))
    return results
