"""How much length-grouped batches save in fine-tuning: `mu train` with and without
``--group-by-length``, side by side (the two alternate per language, so both see the same
machine load), on the same data, seed and hyper-parameters as the real run.

    python benchmarks/training_speed.py --base-model /work/e5 --data-dir ../shared/data/sib200 \\
        --locales de-DE,sw-KE --out /tmp/training-speed

Prints a Markdown table: per language and mode, the training seconds (the whole `mu train`
job: loading, the optimisation steps, the dev pass and saving), the optimisation steps, dev
accuracy, and the grouped/ungrouped time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from common import alternate_trainings

MODES = {"grouped": "--group-by-length", "ungrouped": "--no-group-by-length"}


def train(args: argparse.Namespace, locale: str, mode: str) -> dict:
    folder = args.out / mode / locale
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-m", "merginguriel_cli", "train", "--base-model", str(args.base_model), "--data-dir",
               str(args.data_dir), "--locale", locale, "--output", str(folder), "--epochs", str(args.epochs),
               "--batch-size", "16", "--max-length", "96", "--learning-rate", "5e-5", "--freeze-embeddings",
               "--no-progress", MODES[mode]]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    details = json.loads((folder / "training_details.json").read_text())
    details["wall"] = time.perf_counter() - started
    return details


def main() -> None:
    args, rows = alternate_trainings(__doc__.split("\n\n")[0], MODES, train, epochs=3.0, out="/tmp/training-speed")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end; {args.epochs:g} epochs, batch 16, "
          "max length 96, frozen embeddings\n")
    print("| locale | mode | seconds | steps | dev accuracy | grouped / ungrouped |")
    print("|---|---|---|---|---|---|")
    for locale in args.locales.split(","):
        times = {mode: d["seconds"] for loc, mode, d in rows if loc == locale}
        for loc, mode, d in rows:
            if loc == locale:
                ratio = f"{times['grouped'] / times['ungrouped']:.2f}" if mode == "grouped" else ""
                print(f"| {locale} | {mode} | {d['seconds']:.0f} | {d['steps']} | {d['dev_accuracy']:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
