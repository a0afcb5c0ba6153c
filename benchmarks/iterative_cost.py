"""What iterative training costs over separate fine-tuning plus one merge, side by side.

    python benchmarks/iterative_cost.py E5_DIR [--epochs 2] [--rounds 2]

On the real encoder and SIB-200 (../shared/data/sib200): two sources (en-US, es-ES) trained
for ``--epochs`` epochs (a) separately, as ``mu train`` trains them (FineTuning, back to
back), then merged once in memory, and (b) iteratively, merged after every epoch
(run_iterative: checkpoints, merges, the merge scored on the target's dev split). The two
alternate ``--rounds`` times, so that a noisy shared machine slows both alike; the script
prints each run's seconds and peak resident memory, and the ratios.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sib200"
SOURCES = ("en-US", "es-ES")


def separate(base: Path, epochs: int, folder: Path) -> tuple[float, int]:
    """Each source fine-tuned and saved (mu train's loop), then one linear merge in memory."""
    from merginguriel_core.iterative import _PeakMemory
    from merginguriel_core.merge import merge_state_dict, resolve_device
    from merginguriel_core.plan import plan_merge
    from merginguriel_core.plugins import load_plugins
    from merginguriel_core.selection import SelectionOptions
    from merginguriel_core.training import TrainingConfig, train_one

    registry = load_plugins()
    dataset, device = registry.get("dataset", "sib200"), resolve_device("cpu")
    config = TrainingConfig(epochs=epochs, freeze_embeddings=True)
    started = time.perf_counter()
    with _PeakMemory(device) as memory:
        for locale in SOURCES:
            train_one(dataset, str(DATA), locale, str(base), folder / locale, config, device, progress=False)
        plan = plan_merge(None, strategy="linear", models={locale: folder / locale for locale in SOURCES},
                          selection=SelectionOptions(target="pt-PT", weighting="average", num_languages=2),
                          progress=False, registry=registry)
        merge_state_dict(plan)
    return time.perf_counter() - started, memory.peak


def iterative(base: Path, epochs: int, folder: Path) -> tuple[float, int]:
    from merginguriel_core.iterative import IterativeOptions, plan_iterative, run_iterative
    from merginguriel_core.selection import SelectionOptions
    from merginguriel_core.training import TrainingConfig

    plan = plan_iterative(folder / "run", target="pt-PT", locales=SOURCES, selection=SelectionOptions(weighting="average"),
                          base_model=base, data_dir=DATA, training=TrainingConfig(freeze_embeddings=True),
                          options=IterativeOptions(max_epochs=epochs, merge_frequency=1), device="cpu",
                          keep_model=False, progress=False)
    started = time.perf_counter()
    result = run_iterative(plan)
    return time.perf_counter() - started, max(c["peak_memory_bytes"] for c in result.cycles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is absent: this benchmark needs the SIB-200 data")
    times: dict[str, list[float]] = {"separate": [], "iterative": []}
    peaks: dict[str, list[int]] = {"separate": [], "iterative": []}
    for round_ in range(args.rounds):
        for name, run in (("separate", separate), ("iterative", iterative)):
            folder = Path(tempfile.mkdtemp(prefix=f"mu-{name}-"))
            try:
                seconds, peak = run(args.base, args.epochs, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            times[name].append(seconds)
            peaks[name].append(peak)
            print(f"round {round_ + 1} {name:<9} {seconds:7.1f} s  peak {peak / 2**30:.2f} GiB", flush=True)
    best = {name: min(values) for name, values in times.items()}
    print(f"\n{len(SOURCES)} sources × {args.epochs} epochs; fastest of {args.rounds}: separate {best['separate']:.1f} s, "
          f"iterative {best['iterative']:.1f} s, ratio {best['iterative'] / best['separate']:.2f}; "
          f"peak memory ratio {max(peaks['iterative']) / max(peaks['separate']):.2f}")


if __name__ == "__main__":
    main()
