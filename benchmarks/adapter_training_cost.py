"""What a LoRA adapter costs to train against a whole fine-tuning, side by side: `mu train`
with the real grid's whole-model recipe (learning rate 5e-5, frozen embeddings) and with the
adapter recipe of docs/results/adapters.md (`--adapter lora`, rank 8, alpha 16, learning rate
2e-3), the same epochs, batch 16, max length 96 and seed; the two alternate per language, so
both see the same machine load. Each run is its own process, so its peak memory is its own.

    python benchmarks/adapter_training_cost.py --base-model /work/real/e5 \\
        --data-dir ../shared/data/sib200 --locales de-DE,sw-KE --epochs 1 --out /tmp/adapter-cost

Prints a Markdown table: per language and mode, the training seconds (`training_details.json`:
the optimisation steps and the dev pass), peak resident memory, trainable parameters, the
saved weights' size and dev accuracy, and the adapter / whole time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import alternate_trainings

MODES = {
    "whole": ["--learning-rate", "5e-5", "--freeze-embeddings"],
    "lora": ["--learning-rate", "2e-3", "--adapter", "lora", "--lora-rank", "8", "--lora-alpha", "16"],
}
#: Runs `mu train` and prints the process's peak resident memory (kB on Linux) to stderr.
WRAPPER = ("import resource, sys\nfrom merginguriel_cli.main import main\nsys.argv[0] = 'mu'\ntry:\n    main()\n"
           "finally:\n    print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")


def train(args: argparse.Namespace, locale: str, mode: str) -> dict:
    folder = args.out / mode / locale
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-c", WRAPPER, "train", "--base-model", str(args.base_model), "--data-dir",
               str(args.data_dir), "--locale", locale, "--output", str(folder), "--epochs", str(args.epochs),
               "--batch-size", "16", "--max-length", "96", "--no-progress", *MODES[mode]]
    done = subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    details = json.loads((folder / "training_details.json").read_text())
    details["maxrss_mb"] = int(done.stderr.rsplit("maxrss", 1)[1].split()[0]) / 1024
    details["weights_mb"] = sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6
    details["trainable"] = (details["adapter"]["trainable_parameters"] if details.get("adapter")
                            else _trained_whole(folder))
    return details


def _trained_whole(folder: Path) -> int:
    """A whole fine-tuning with frozen embeddings trains every tensor but the word embeddings."""
    import math

    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys() if "word_embeddings" not in name)
    return total


def main() -> None:
    args, rows = alternate_trainings(__doc__.split("\n\n")[0], MODES, train, epochs=1.0, out="/tmp/adapter-cost")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end; {args.epochs:g} epoch(s), "
          "batch 16, max length 96, seed 0\n")
    print("| locale | mode | seconds | peak memory | trainable parameters | saved weights | dev accuracy "
          "| lora / whole time |")
    print("|---|---|---|---|---|---|---|---|")
    for locale in args.locales.split(","):
        times = {mode: d["seconds"] for loc, mode, d in rows if loc == locale}
        for loc, mode, d in rows:
            if loc != locale:
                continue
            ratio = f"{times['lora'] / times['whole']:.2f}" if mode == "lora" else ""
            print(f"| {locale} | {mode} | {d['seconds']:.1f} | {d['maxrss_mb']:.0f} MB | {d['trainable']:,} | "
                  f"{d['weights_mb']:.1f} MB | {d['dev_accuracy']:.3f} | {ratio} |")
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
