"""Merge speed and memory: MergingUriel against mergekit, whole-model loading and the IO floor.

Builds K synthetic fine-tuned models shaped like ``xlm-roberta-base`` for sequence
classification (hidden 768, 12 layers, vocabulary 250,002, 60 labels: ~278M parameters,
~1.1 GB in fp32) from one random base plus per-model deltas, cached between runs
(``--size small``: hidden 64, 4 layers, ~17M parameters, for a quick run; ``--size medium``:
hidden 96, 2 layers, ~100 MB per model). Then, each merge a
separate process under ``/usr/bin/time -v``:

- ours: ``mu merge`` with linear, task_arithmetic, ties (density 0.5), dare_ties, slerp (two
  models) and fisher (statistics precomputed once and reused);
- mergekit (``pip install mergekit`` into its own virtual environment under --cache; skipped
  with a notice when that fails): the same merges where it has them;
- naive: load all K state dicts fully, merge in memory, save;
- floor: read every input once and write one output, nothing else.

Prints one table (wall seconds, peak RSS MB, ratios ours/theirs) and checks that ours and
mergekit's outputs agree where the definitions agree.

Usage: python benchmarks/compare.py [--size base|small] [--models 5] [--cache DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

from common import strategy_options

SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256),
    # ~100 MB per model, nearly all of it the 250,002-row embedding matrix.
    "medium": dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=2, intermediate_size=384),
}
LOCALES = ["de-DE", "nl-NL", "af-ZA", "da-DK", "sv-SE", "fr-FR", "es-ES", "it-IT"]
PATTERN = "model_{locale}"


def build(cache: Path, size: str, count: int) -> Path:
    """``cache/<size>/base`` and ``model_<locale>`` folders (reused when present)."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
    from transformers.utils import logging as hf_logging

    from merginguriel_core.dataset_files import MASSIVE_INTENTS

    hf_logging.disable_progress_bar()
    root = cache / size
    folders = [root / "base"] + [root / PATTERN.format(locale=loc) for loc in LOCALES[:count]]
    if all((f / "model.safetensors").exists() for f in folders):
        return root
    config = XLMRobertaConfig(vocab_size=250_002, max_position_embeddings=514, type_vocab_size=1,
                              num_labels=60, id2label=dict(enumerate(MASSIVE_INTENTS)),
                              label2id={l: i for i, l in enumerate(MASSIVE_INTENTS)}, **SIZES[size])
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(config)
    model.save_pretrained(root / "base")
    base = {k: v.clone() for k, v in model.state_dict().items()}
    for index, folder in enumerate(folders[1:]):
        generator = torch.Generator().manual_seed(index + 1)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if tensor.is_floating_point():
                    tensor.copy_(base[name] + 0.01 * torch.randn(tensor.shape, generator=generator))
        model.save_pretrained(folder)
    return root


def measure(command: list[str], env: dict | None = None) -> tuple[float, float]:
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}...: {result.stderr.strip().splitlines()[-1] if result.stderr else ''}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    return int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3)), rss


NAIVE = textwrap.dedent('''
    import sys, json, torch
    from safetensors.torch import load_file, save_file
    method, params, base_dir, out, *paths = sys.argv[1:]
    params = json.loads(params)
    states = [load_file(p + "/model.safetensors") for p in paths]          # every model whole
    base = load_file(base_dir + "/model.safetensors")
    w = torch.full((len(states),), 1.0 / len(states))
    merged = {}
    for name in states[0]:
        xs = torch.stack([s[name].float() for s in states])
        if not xs.is_floating_point() or name not in base:
            merged[name] = states[0][name]; continue
        b = base[name].float()
        d = xs - b
        if method == "linear":
            r = (w.view(-1, *[1] * (xs.dim() - 1)) * xs).sum(0)
        elif method == "task_arithmetic":
            r = b + (w.view(-1, *[1] * (xs.dim() - 1)) * d).sum(0)
        elif method in ("ties", "dare_ties"):
            flat = d.reshape(len(states), -1)
            if method == "ties":
                k = max(1, int(params["density"] * flat.shape[1]))
                for row in flat:                                                    # per model, in place
                    threshold = row.abs().kthvalue(row.numel() - k + 1).values
                    row.mul_(row.abs() >= threshold)
            else:
                flat = flat * (torch.rand_like(flat) < params["density"]) / params["density"]
            sign = torch.where(flat.sum(0) >= 0, 1.0, -1.0)
            agree = (flat != 0) & (torch.sign(flat) == sign)
            r = b + ((flat * agree).sum(0) / agree.sum(0).clamp_min(1)).reshape(b.shape)
        elif method == "slerp":
            a, c = xs[0].flatten(), xs[1].flatten()
            cos = torch.dot(a / a.norm(), c / c.norm()).clamp(-1, 1)
            om = torch.arccos(cos)
            # mergekit's definition at t = 0.5: raw vectors, the angle of their directions, lerp if colinear
            r = (torch.sin(0.5 * om) * (a + c) / torch.sin(om)).reshape(b.shape) if cos.abs() <= 0.9995 else (a + c).reshape(b.shape) / 2
        merged[name] = r.to(states[0][name].dtype).contiguous()
    save_file(merged, out + "/model.safetensors")
''')

FLOOR = textwrap.dedent('''
    import sys
    from pathlib import Path
    from merginguriel_core.io import TensorSource, ShardedSafetensorsWriter
    from merginguriel_core.memory import reuse_freed_buffers
    reuse_freed_buffers()
    out, *paths = sys.argv[1:]
    sources = [TensorSource(p) for p in paths]
    rows_per = lambda shape: max(1, (2 * 1024**2) // (4 * max(1, __import__("math").prod(shape[1:]))))
    with ShardedSafetensorsWriter(Path(out), sources[0].layout()) as writer:
        for name, dtype, shape in sources[0].layout():
            if len(shape) == 0:
                for source in sources[1:]:
                    source.get(name)
                writer.write(name, sources[0].get(name))
                continue
            step = rows_per(shape)
            for start in range(0, shape[0], step):      # 2 MiB slices, as the merges read them
                stop = min(shape[0], start + step)
                for source in sources[1:]:
                    source.get_rows(name, start, stop)  # read every input once
                writer.write_rows(name, sources[0].get_rows(name, start, stop))  # write one output
''')


def mergekit_config(method: str, base: Path, models: list[Path]) -> dict:
    entries = [{"model": str(m), "parameters": {"weight": 1.0 / len(models)}} for m in models]
    if method in ("ties", "dare_ties"):
        for e in entries:
            e["parameters"]["density"] = 0.5
    config = {"merge_method": method, "models": entries, "dtype": "float32"}
    if method in ("task_arithmetic", "ties", "dare_ties"):
        config["base_model"] = str(base)
        config["models"] = [{"model": str(base)}] + entries if method == "task_arithmetic" else entries
    if method == "slerp":
        config = {"merge_method": "slerp", "base_model": str(models[0]), "models": [{"model": str(m)} for m in models[:2]],
                  "parameters": {"t": 0.5}, "dtype": "float32"}
    return config


def ensure_mergekit(cache: Path) -> Path | None:
    venv = cache / "mergekit-venv"
    exe = venv / "bin" / "mergekit-yaml"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True, capture_output=True, timeout=900)
        subprocess.run([*pip, "mergekit"], check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"notice: mergekit could not be installed ({exc}); its columns are skipped", file=sys.stderr)
        return None
    return exe if exe.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "merginguriel-bench")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-mergekit", action="store_true")
    args = parser.parse_args()

    root = build(args.cache, args.size, args.models)
    models = [root / PATTERN.format(locale=loc) for loc in LOCALES[: args.models]]
    model_mb = (models[0] / "model.safetensors").stat().st_size / 1e6
    mergekit = None if args.skip_mergekit else ensure_mergekit(args.cache)
    python = sys.executable
    weights = ",".join(f"{loc}=1" for loc in LOCALES[: args.models])
    data = args.cache / "fisher-data.tsv"
    if not data.exists():
        from merginguriel_core.dataset_files import MASSIVE_INTENTS

        data.write_text("text\tlabel\n" + "".join(f"set an alarm for {i} am\t{MASSIVE_INTENTS[i % 60]}\n" for i in range(8)))
    env = dict(os.environ)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.cache) as work:
        work = Path(work)

        def ours(method, extra=(), two=False):
            out = work / f"ours-{method}"
            chosen = ",".join(f"{loc}=1" for loc in LOCALES[:2]) if two else weights
            command = [python, "-m", "merginguriel_cli", "merge", "--strategy", method, "--weighting", "manual",
                       "--weights", chosen, "--models", str(root), "--model-pattern", PATTERN,
                       *strategy_options(method, base=root / "base"),
                       "--device", args.device, "--no-progress", "--output", str(out), *extra]
            return measure(command, env), out

        def theirs(method):
            if mergekit is None:
                return None, None
            out = work / f"mergekit-{method}"
            config = work / f"{method}.yml"
            config.write_text(json.dumps(mergekit_config(method, root / "base", models)))
            try:
                return measure([str(mergekit), str(config), str(out)]), out
            except RuntimeError as exc:
                print(f"notice: mergekit {method} failed: {exc}", file=sys.stderr)
                return None, None

        def naive(method, params):
            out = work / f"naive-{method}"
            out.mkdir()
            paths = models[:2] if method == "slerp" else models
            return measure([python, "-c", NAIVE, method, json.dumps(params), str(root / "base"), str(out),
                            *map(str, paths)])

        # The floor runs twice and the second run counts: the first also pulls the inputs into
        # the page cache, which every later merge finds warm.
        for attempt in range(2):
            floor = work / f"floor-{attempt}"
            floor.mkdir()
            floor_figures = measure([python, "-c", FLOOR, str(floor), *map(str, models)])
            shutil.rmtree(floor)
        for method, extra, params, two in [
            ("linear", (), {}, False), ("task_arithmetic", (), {}, False),
            ("ties", ("--param", "density=0.5"), {"density": 0.5}, False),
            ("dare_ties", ("--param", "density=0.5"), {"density": 0.5}, False),
            ("slerp", (), {}, True),
        ]:
            (ours_figures, ours_out) = ours(method, extra, two)
            mk_figures, mk_out = theirs(method)
            naive_figures = naive(method, params)
            agreement = compare_outputs(ours_out, mk_out) if method in ("linear", "task_arithmetic", "ties", "slerp") else None
            rows.append((method, ours_figures, mk_figures, naive_figures, agreement))
            shutil.rmtree(ours_out, ignore_errors=True)
            if mk_out:
                shutil.rmtree(mk_out, ignore_errors=True)
        # Fisher: statistics computed once (8 examples per model), then a timed merge that reuses them.
        fisher_extra = ("--data-file", str(data), "--param", "examples=8", "--stats-dir", str(args.cache / "stats"))
        ours("fisher", fisher_extra)
        shutil.rmtree(work / "ours-fisher", ignore_errors=True)
        fisher_figures, _ = ours("fisher", fisher_extra)
        rows.append(("fisher (statistics reused)", fisher_figures, None, None, None))

    print(f"K={args.models} models of {model_mb:.0f} MB ({args.size}: XLM-R-shaped, fp32); device {args.device}; "
          f"CPU threads {torch.get_num_threads()}")
    print(f"floor (read all inputs once, write one output): {floor_figures[0]:.1f} s, {floor_figures[1]:.0f} MB")
    header = f"{'strategy':<28}{'ours s':>8}{'ours MB':>9}{'mk s':>8}{'mk MB':>8}{'naive s':>9}{'naive MB':>9}" \
             f"{'ours/mk t':>10}{'ours/mk m':>10}{'ours/floor t':>13}{'max |diff|':>12}  entries > 1e-5"
    print(header)
    for method, o, m, n, agree in rows:
        mk_t = f"{m[0]:8.1f}" if m else f"{'—':>8}"
        mk_m = f"{m[1]:8.0f}" if m else f"{'—':>8}"
        nv_t = f"{n[0]:9.1f}" if n else f"{'—':>9}"
        nv_m = f"{n[1]:9.0f}" if n else f"{'—':>9}"
        rt = f"{o[0] / m[0]:10.2f}" if m else f"{'—':>10}"
        rm = f"{o[1] / m[1]:10.2f}" if m else f"{'—':>10}"
        agree_text = (f"{agree[0]:12.2e}  {agree[1]:,} of {agree[2]:,} ({agree[1] / agree[2]:.1e})"
                      if agree is not None else f"{'—':>12}")
        print(f"{method:<28}{o[0]:8.1f}{o[1]:9.0f}{mk_t}{mk_m}{nv_t}{nv_m}{rt}{rm}{o[0] / floor_figures[0]:13.2f}{agree_text}")


def compare_outputs(ours: Path | None, theirs: Path | None) -> tuple[float, int, int] | None:
    """Largest absolute difference between two merged models' common float tensors, how many
    entries differ by more than 1e-5, and how many entries were compared."""
    if ours is None or theirs is None or not theirs.exists():
        return None
    from merginguriel_core.io import TensorSource

    worst, differing, total = 0.0, 0, 0
    with TensorSource(ours) as a, TensorSource(theirs) as b:
        for name in a.keys():
            if name in b and a.info(name).dtype.is_floating_point:
                diff = (a.get(name).float() - b.get(name).float()).abs()
                worst = max(worst, float(diff.max()))
                differing += int((diff > 1e-5).sum())
                total += diff.numel()
    return worst, differing, total


if __name__ == "__main__":
    main()
