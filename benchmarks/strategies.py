"""Wall time and peak memory of every merge strategy on K real-sized models.

Builds K "fine-tuned" sequence classifiers from a pre-trained encoder folder (default: the
multilingual-e5-small that ``../shared/tools/build-e5-small`` builds, 118M parameters): the
encoder plus one shared classification head (the SIB-200 topics), each model perturbed by
its own seeded noise, saved under --cache with the encoder as the base model. Then runs
``mu merge --strategy S`` for every strategy, each in its own process under
``/usr/bin/time -v``, and prints wall seconds and peak resident memory.

Fisher and RegMean read labelled data (``--data-dir``, SIB-200 layout; default
``../shared/data/sib200``); their statistics are computed on the first run and reused after,
and the table reports both.

Usage:
    ../shared/tools/build-e5-small /tmp/e5
    python benchmarks/strategies.py --encoder /tmp/e5 [--models 5] [--examples 64]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import strategy_options

LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
LOCALES = ["de-DE", "nl-NL", "af-ZA", "da-DK", "sv-SE", "fr-FR", "es-ES", "it-IT"]
PATTERN = "model_{locale}"
STRATEGIES = [
    ("linear", []), ("task_arithmetic", []), ("ties", ["--param", "density=0.5"]),
    ("dare", []), ("dare_linear", []), ("dare_ties", []), ("breadcrumbs", []), ("breadcrumbs_ties", []),
    ("della", []), ("della_linear", []), ("karcher", []), ("model_stock", []), ("fisher_simple", []),
    ("fisher", ["--data-dir", "{data}", "--param", "examples={examples}"]),
    ("regmean", ["--data-dir", "{data}", "--param", "examples={examples}"]),
]


def build_models(encoder: Path, cache: Path, count: int) -> Path:
    """Write ``cache/base`` and ``cache/model_<locale>`` for ``count`` locales (reused when present)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folders = [cache / PATTERN.format(locale=loc) for loc in LOCALES[:count]]
    if (cache / "base" / "model.safetensors").exists() and all((f / "model.safetensors").exists() for f in folders):
        return cache
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model.save_pretrained(cache / "base")
    tokenizer.save_pretrained(cache / "base")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    for index, folder in enumerate(folders):
        generator = torch.Generator().manual_seed(index + 1)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if tensor.is_floating_point():
                    scale = 1e-3 * float(base[name].std()) if base[name].numel() > 1 else 1e-3
                    tensor.copy_(base[name] + scale * torch.randn(tensor.shape, generator=generator))
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return cache


def measure(command: list[str]) -> tuple[float, float, str]:
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return seconds, rss, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, required=True, help="pre-trained encoder folder (build-e5-small)")
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--examples", type=int, default=64, help="examples per model for Fisher and RegMean")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sib200")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "merginguriel-strategies")
    parser.add_argument("--only", nargs="*", help="strategies to run (default: all)")
    args = parser.parse_args()

    models = build_models(args.encoder, args.cache, args.models)
    size_mb = (models / "base" / "model.safetensors").stat().st_size / 1e6
    stats_dir = args.cache / "statistics"
    weights = ",".join(f"{loc}=1" for loc in LOCALES[: args.models])
    rows = []
    with tempfile.TemporaryDirectory(dir=args.cache) as work:
        for strategy, extra in STRATEGIES:
            if args.only and strategy not in args.only:
                continue
            if strategy in ("fisher", "regmean") and not args.data_dir.is_dir():
                print(f"skipping {strategy}: no data at {args.data_dir}", file=sys.stderr)
                continue
            extra = [e.format(data=args.data_dir, examples=args.examples) for e in extra]
            runs = 2 if strategy in ("fisher", "regmean") else 1
            for run in range(runs):
                out = Path(work) / f"{strategy}-{run}"
                command = [sys.executable, "-m", "merginguriel_cli", "merge", "--strategy", strategy,
                           "--weighting", "manual", "--weights", weights, "--models", str(models),
                           "--model-pattern", PATTERN,
                           *strategy_options(strategy, base=models / "base", stats_dir=stats_dir),
                           "--device", "cpu", "--no-progress", "--output", str(out),
                           *extra]
                seconds, rss, _ = measure(command)
                statistics = json.loads((out / "merge_details.json").read_text()).get("statistics")
                label = strategy
                if statistics is not None:
                    label += " (statistics reused)" if all(s["reused"] for s in statistics) else " (statistics computed)"
                rows.append((label, seconds, rss))
                shutil.rmtree(out)
    print(f"K={args.models} models of {size_mb:.0f} MB ({args.encoder.name}, fp32); CPU threads {torch.get_num_threads()}; "
          f"Fisher/RegMean on {args.examples} examples per model")
    print(f"{'strategy':<34} {'wall s':>8} {'peak RSS MB':>12}")
    for label, seconds, rss in rows:
        print(f"{label:<34} {seconds:>8.1f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
