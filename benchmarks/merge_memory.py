"""Peak memory and wall time of a streaming `mu merge` against loading every model whole.

Builds K synthetic fine-tuned models shaped like an XLM-R classifier (the real 250,002-row
vocabulary, a narrower hidden size so each model is about 100 MB in fp32), cached under
--cache. Then measures, each in its own process under /usr/bin/time -v:

- `mu merge --strategy linear` (streaming, this project),
- a naive merge that loads all K state dicts with safetensors and averages them in memory,
- reading every input once and writing one output of the same size (the IO floor).

Usage: python benchmarks/merge_memory.py [--models 5] [--hidden 96] [--cache DIR]
Prints a table; nothing here is a unit test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

PATTERN = "xlm-roberta-base_massive_k_{locale}"
LOCALES = ["de-DE", "nl-NL", "af-ZA", "da-DK", "sv-SE", "fr-FR", "ja-JP", "fa-IR", "tr-TR", "fi-FI"]


def build_models(cache: Path, count: int, hidden: int, layers: int) -> list[Path]:
    """One random base plus per-model deltas, saved like Hugging Face models; reused if present."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tag = f"h{hidden}-l{layers}"
    folders = [cache / tag / PATTERN.format(locale=loc) for loc in LOCALES[:count]]
    if all((f / "model.safetensors").exists() for f in folders):
        return folders
    config = XLMRobertaConfig(
        vocab_size=250_002, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden, num_labels=60,
    )
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(config)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    for index, folder in enumerate(folders):
        generator = torch.Generator().manual_seed(index + 1)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if tensor.is_floating_point():
                    tensor.copy_(base[name] + 0.01 * torch.randn(tensor.shape, generator=generator))
        model.save_pretrained(folder)
    return folders


NAIVE = """
import sys, torch
from safetensors.torch import load_file, save_file
paths, out = sys.argv[1:-1], sys.argv[-1]
states = [load_file(p + "/model.safetensors") for p in paths]   # every model whole in memory
merged = {k: sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype) for k in states[0]}
save_file(merged, out + "/model.safetensors")
"""

FLOOR = """
import sys
from merginguriel_core.io import TensorSource, ShardedSafetensorsWriter
paths, out = sys.argv[1:-1], sys.argv[-1]
sources = [TensorSource(p) for p in paths]
with ShardedSafetensorsWriter(__import__("pathlib").Path(out), sources[0].layout()) as writer:
    for name in sources[0].keys():
        for source in sources[1:]:                      # read every input once
            source.get(name)
        writer.write(name, sources[0].get(name))        # write one output
"""


def measure(command: list[str]) -> tuple[float, float]:
    """Run ``command`` under /usr/bin/time -v; return (wall seconds, peak RSS in MB)."""
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    hours, minutes, seconds = int(wall.group(1) or 0), int(wall.group(2)), float(wall.group(3))
    return hours * 3600 + minutes * 60 + seconds, rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "merginguriel-bench")
    args = parser.parse_args()

    folders = build_models(args.cache, args.models, args.hidden, args.layers)
    size_mb = (folders[0] / "model.safetensors").stat().st_size / 1e6
    python = sys.executable
    baseline = measure([python, "-c", "import torch, safetensors, transformers"])
    rows = []
    with tempfile.TemporaryDirectory(dir=args.cache) as work:
        work = Path(work)
        weights = ",".join(f"{loc}=1" for loc in LOCALES[: args.models])
        mu = [python, "-m", "merginguriel_cli", "merge", "--weighting", "manual", "--weights", weights,
              "--models", str(folders[0].parent), "--no-progress", "--device", "cpu"]
        rows.append(("mu merge linear (streaming)", *measure([*mu, "--output", str(work / "ours")])))
        (work / "naive").mkdir()
        rows.append(("naive: load all, average", *measure([python, "-c", NAIVE, *map(str, folders), str(work / "naive")])))
        (work / "floor").mkdir()
        rows.append(("IO floor: read all once, write one", *measure([python, "-c", FLOOR, *map(str, folders), str(work / "floor")])))
    print(f"K={args.models} models of {size_mb:.0f} MB each (fp32, vocabulary 250,002, hidden {args.hidden}); "
          f"CPU threads {torch.get_num_threads()}")
    print(f"Python + torch + transformers import alone: {baseline[1]:.0f} MB peak RSS")
    print(f"{'run':<38} {'wall s':>7} {'peak RSS MB':>12} {'RSS - import MB':>16} {'/ one model':>12}")
    for name, wall, rss in rows:
        extra = rss - baseline[1]
        print(f"{name:<38} {wall:>7.2f} {rss:>12.0f} {extra:>16.0f} {extra / size_mb:>12.2f}")
    print(json.dumps({"model_mb": size_mb, "import_rss_mb": baseline[1],
                      "rows": [{"run": n, "wall_s": w, "peak_rss_mb": r} for n, w, r in rows]}))


if __name__ == "__main__":
    main()
