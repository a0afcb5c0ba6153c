"""What checking every input chunk for NaN/inf costs a merge.

Builds K random float32 models (``--megabytes`` each, in a temporary folder), then merges
them with each ``--strategies`` entry, with the input check on and off (the engine's
``_TensorMerger._check_finite`` replaced by a no-op), alternating the two ``--rounds``
times so both see the same machine load. Prints the median wall time of each and their
ratio; the page cache is warmed by one untimed merge first.

    python benchmarks/input_checks.py --models 5 --megabytes 100 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from merginguriel_core.merge import SourceModel, _TensorMerger, run_merge
from merginguriel_core.plan import plan_merge
from merginguriel_core.plugins import get_registry


def build(root: Path, count: int, megabytes: int) -> list[Path]:
    """``count`` models (and ``base``) of 8 float32 matrices each, ~``megabytes`` MB in all."""
    rows = max(1, megabytes * 10**6 // (8 * 4 * 1024))
    generator = torch.Generator().manual_seed(0)
    base = {f"layer.{i}.weight": torch.randn(rows, 1024, generator=generator) for i in range(8)}
    folders = []
    for index in range(count + 1):
        folder = root / ("base" if index == count else f"model-{index}")
        folder.mkdir()
        tensors = base if index == count else {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in base.items()}
        save_file(tensors, str(folder / "model.safetensors"))
        folders.append(folder)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strategies", nargs="+", default=["linear", "ties"])
    args = parser.parse_args()
    registry = get_registry()
    checked = _TensorMerger._check_finite
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        *models, base = build(root, args.models, args.megabytes)
        sources = [SourceModel(f"m{i}", folder, 1.0) for i, folder in enumerate(models)]

        def merge(strategy: str, check: bool, name: str) -> float:
            _TensorMerger._check_finite = checked if check else (lambda self, *a: None)
            plugin = registry.get("strategy", strategy)
            plan = plan_merge(root / name, strategy=plugin, sources=sources,
                              base_model=base if plugin.needs_base else None, progress=False)
            started = time.perf_counter()
            run_merge(plan)
            return time.perf_counter() - started

        merge(args.strategies[0], True, "warm-up")
        print(f"K={args.models} models of {args.megabytes} MB (float32), CPU threads {torch.get_num_threads()}")
        print(f"{'strategy':<10} {'checked s':>10} {'unchecked s':>12} {'ratio':>7}")
        for strategy in args.strategies:
            times = {True: [], False: []}
            for round_ in range(args.rounds):
                for check in (True, False) if round_ % 2 == 0 else (False, True):
                    times[check].append(merge(strategy, check, f"{strategy}-{check}-{round_}"))
            on, off = statistics.median(times[True]), statistics.median(times[False])
            print(f"{strategy:<10} {on:>10.2f} {off:>12.2f} {on / off:>7.3f}")
    _TensorMerger._check_finite = checked
    sys.stdout.flush()


if __name__ == "__main__":
    main()
