"""What adamerging and representation cost per target, on the real models.

    python benchmarks/target_aware_cost.py MODELS_DIR E5_DIR [--target sw-KE] [--steps 30]

MODELS_DIR holds the real grid's models (benchmarks/real_grid.sh: ``e5-small_sib200_{locale}``),
E5_DIR the base encoder. For K = 2, 5 and 10 sources (the K most URIEL-similar to the target,
as softmax chooses them) it runs adamerging on the target's SIB-200 dev sentences (labels
unused) and prints the seconds per step, the whole run, the bytes of the tuned tensors
(the K sources' copies of the tensors they differ on), the bytes of K whole models for
comparison, and the peak resident memory of the process. Then representation, once with
an empty embedding cache and once with the sources' embeddings cached. Each measurement runs
in a fresh process, so the peaks do not mix.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sib200"
PATTERN = "e5-small_sib200_{locale}"


def _selection(args, weighting: str, params: dict, k: int):
    from merginguriel_core.selection import SelectionOptions
    from merginguriel_core.target_text import TargetText

    return SelectionOptions(target=args.target, weighting=weighting, num_languages=k, weighting_params=params,
                            target_text=TargetText(split="dev", location=str(DATA)))


def measure(args) -> dict:
    """One measurement, in this process (``--inner``)."""
    import os

    from merginguriel_core.plan import ModelSources, choose_sources

    if args.cache:
        os.environ["XDG_CACHE_HOME"] = args.cache
    params = ({"steps": args.steps, "max_length": 96} if args.inner == "adamerging"
              else {"encoder": args.e5, "max_length": 96})
    started = time.perf_counter()
    selection, refs = choose_sources(_selection(args, args.inner, params, args.k),
                                     ModelSources(folder=Path(args.models), pattern=PATTERN), base_model=args.e5,
                                     device="cpu")
    seconds = time.perf_counter() - started
    details = selection.result.details
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    whole = sum(f.stat().st_size for locale, _ in selection.weights
                for f in Path(refs[locale].location).glob("*.safetensors"))
    return {"weighting": args.inner, "k": len(selection.weights), "seconds": seconds, "peak_bytes": peak,
            "whole_models_bytes": whole, "seconds_per_step": details.get("seconds_per_step"),
            "tuned_bytes": details.get("tuned_bytes"), "entropy": [details.get("entropy_before"),
                                                                    details.get("entropy_after")]}


def run(args, weighting: str, k: int, cache: str | None) -> dict:
    command = [sys.executable, __file__, args.models, args.e5, "--target", args.target, "--steps", str(args.steps),
               "--inner", weighting, "--k", str(k)] + (["--cache", cache] if cache else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models")
    parser.add_argument("e5")
    parser.add_argument("--target", default="sw-KE")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--inner", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(measure(args)))
        return
    mib = 1024 ** 2
    print(f"adamerging on {args.target}'s dev sentences, {args.steps} steps, batch 16, 96 tokens (CPU):")
    print(f"{'K':>3} {'s/step':>8} {'run s':>7} {'tuned MiB':>10} {'K models MiB':>13} {'peak RSS MiB':>13}  entropy")
    for k in (2, 5, 10):
        r = run(args, "adamerging", k, None)
        print(f"{r['k']:>3} {r['seconds_per_step']:>8.3f} {r['seconds']:>7.1f} {r['tuned_bytes'] / mib:>10.0f} "
              f"{r['whole_models_bytes'] / mib:>13.0f} {r['peak_bytes'] / mib:>13.0f}  "
              f"{r['entropy'][0]:.4f} -> {r['entropy'][1]:.4f}")
    print("representation (12 candidates, 200 sentences each, middle layer):")
    with tempfile.TemporaryDirectory() as cache:
        for label in ("empty cache", "sources cached"):
            r = run(args, "representation", 5, cache)
            print(f"  {label:<15} {r['seconds']:>6.1f} s   peak RSS {r['peak_bytes'] / mib:.0f} MiB")


if __name__ == "__main__":
    main()
