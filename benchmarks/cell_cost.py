"""What one cell of the experiment grid costs evaluated from memory, against merging to disk
and evaluating the written model.

    python benchmarks/cell_cost.py --models /work/models --pattern e5-small_sib200_{locale} \\
        --base-model /work/e5 --data-dir ../shared/data/sib200 --target sw-KE \\
        --sources de-DE,fr-FR,nl-NL,af-ZA,da-DK --strategies linear,ties --repeats 3
    python benchmarks/cell_cost.py --zoo     # a tiny zoo and data: checks that the script runs

For each strategy, in one process, the four runs alternate within each repeat (so all of
them see the same machine load; one untimed round first warms the page cache and imports):

- (a) ``run_merge`` to a folder on disk (the merge alone);
- (b) a forward pass alone: the first source loaded from disk (model and tokenizer), then
  its predictions on the target's test split — what evaluating a written merge costs;
- (c) the in-memory cell: ``merge_and_evaluate`` (``merge_state_dict``, then
  ``model_from_state_dict`` and the same predictions);
- (d) (c) with the agreement shortcut off (``agreement_shortcut=False``).

Prints a Markdown table of median seconds, the ratio (c) / ((a) + (b)) (the target: within
1.3), what (c) spent merging, building and predicting, the tensors taken as agreed and the
time the agreement check spent on tensors that differ.

With ``--nxn-targets``, also an N×N row (the grid's unit of zero-shot work) against its
floor: (e) the first source's row over those targets as the grid computes it
(``grid.run_nxn_row``: the model loaded once, each target's logits through the predictor,
scored; no cache), against (f) the forward passes alone (the model already loaded, only
``predict_logits`` per target). The target: (e) / (f) within 1.2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from merginguriel_core.zoo import LABELS, _WORDS, build_zoo

COLUMNS = ("a", "b", "c", "d")


def tiny_setup(root: Path, target: str, sources: list[str], pattern: str) -> tuple[Path, Path, Path]:
    """A zoo (``base`` and one model per locale, whose word embeddings all equal the base's,
    as when fine-tuning freezes them) and a SIB-200-style test split for ``target``."""
    import torch
    from safetensors.torch import load_file, save_file

    from merginguriel_core.languages import resolve_language

    models = root / "zoo"
    paths = build_zoo(models, [target, *sources], pattern=pattern, hidden_size=64, layers=2)
    frozen = {name: tensor for name, tensor in load_file(models / "base" / "model.safetensors").items()
              if name.endswith("word_embeddings.weight")}
    for folder in paths.values():
        state = load_file(folder / "model.safetensors")
        state.update({name: tensor.clone() for name, tensor in frozen.items()})
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    data = root / "sib200"
    split = data / resolve_language(target).flores
    split.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    rows = ["index_id\tcategory\ttext"]
    for index in range(204):
        words = [_WORDS[int(i)] for i in torch.randint(len(_WORDS), (12,), generator=generator)]
        rows.append(f"{index}\t{LABELS[index % len(LABELS)]}\t{' '.join(words)}")
    (split / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return models, models / "base", data


def measure(args: argparse.Namespace, strategy: str, work: Path) -> dict:
    """Seconds of (a)-(d) per repeat, and what the in-memory cell reported."""
    from merginguriel_core.inmemory import merge_and_evaluate
    from merginguriel_core.merge import SourceModel, run_merge
    from merginguriel_core.plan import plan_merge
    from merginguriel_core.plugins import get_registry
    from merginguriel_core.statistics import load_classifier
    from merginguriel_core.training import predict_logits

    registry = get_registry()
    dataset = registry.get("dataset", "sib200")
    examples = dataset.load(str(args.data_dir), args.target, "test")
    labels = dataset.labels(str(args.data_dir))
    sources = [SourceModel(locale, args.models / args.pattern.format(locale=locale), 1.0) for locale in args.sources]
    reads_base = "base_model" in registry.get("strategy", strategy).options_read()
    settings = dict(strategy=strategy, sources=sources, base_model=args.base_model if reads_base else None,
                    device=args.device, progress=False, registry=registry)
    output = work / f"merged-{strategy}"
    on_disk = plan_merge(output, **settings)
    in_memory = dataclasses.replace(on_disk, output=None)
    without = dataclasses.replace(in_memory, agreement_shortcut=False)
    batching = dict(batch_size=args.batch_size, max_length=args.max_length)

    def merge_to_disk() -> None:
        shutil.rmtree(output, ignore_errors=True)
        run_merge(on_disk)
        shutil.rmtree(output)

    def forward_from_disk() -> None:
        model, tokenizer = load_classifier(sources[0].path, on_disk.device)
        predict_logits(model, tokenizer, examples.texts, args.batch_size, args.max_length, on_disk.device)

    found: dict = {"seconds": {column: [] for column in COLUMNS}, "parts": [], "accuracy": {}}

    def cell(plan, column: str) -> None:
        details: dict = {}
        result = merge_and_evaluate(plan, examples, labels, evaluators=("accuracy",), details=details, **batching)
        found["accuracy"][column] = result.metrics["accuracy"]
        if column == "c":
            found["parts"].append(result.timings)
            found["details"] = details

    runs = {"a": merge_to_disk, "b": forward_from_disk, "c": lambda: cell(in_memory, "c"),
            "d": lambda: cell(without, "d")}
    for round_ in range(args.repeats + 1):  # round 0 warms up, untimed
        for column, run in runs.items():
            started = time.perf_counter()
            run()
            if round_:
                found["seconds"][column].append(time.perf_counter() - started)
        print(f"  {strategy}: round {round_} done", file=sys.stderr)
    return found


def measure_nxn(args: argparse.Namespace, work: Path) -> dict:
    """Seconds of (e) an N×N row and (f) its forward passes alone, per repeat."""
    import yaml

    from merginguriel_core.evaluation import LogitsCache
    from merginguriel_core.experiments import grid
    from merginguriel_core.experiments.runner import build_context
    from merginguriel_core.experiments.spec import load_spec
    from merginguriel_core.statistics import load_classifier
    from merginguriel_core.training import predict_logits

    model = args.sources[0]
    spec_file = work / "nxn-spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "models": {"folder": str(Path(args.models).resolve()), "pattern": args.pattern},
        "data": {"dataset": "sib200", "data_dir": str(Path(args.data_dir).resolve()), "max_length": args.max_length,
                 "batch_size": args.batch_size, "evaluators": ["accuracy"]},
        "targets": args.nxn_targets, "selections": ["average"], "voting": ["majority"]}), encoding="utf-8")
    context = build_context(load_spec(spec_file), work / "nxn-results")
    task = grid.Task("nxn", tuple(grid.Cell(t, "nxn", model) for t in args.nxn_targets))
    texts = {t: context.dataset.load(str(args.data_dir), t, "test").texts for t in args.nxn_targets}
    found = {"e": [], "f": []}
    for round_ in range(args.repeats + 1):
        context._predictor = None  # a fresh predictor: the model is loaded again, once per row
        context._examples.clear()
        started = time.perf_counter()
        context.predictor().cache = LogitsCache(None)
        outcomes = grid.run_nxn_row(context, task)
        row = time.perf_counter() - started
        assert all(o["status"] == "done" for o in outcomes), outcomes
        loaded, tokenizer = load_classifier(context.models[model], context.device)
        started = time.perf_counter()
        for target in args.nxn_targets:
            predict_logits(loaded, tokenizer, texts[target], args.batch_size, args.max_length, context.device)
        forward = time.perf_counter() - started
        if round_:
            found["e"].append(row)
            found["f"].append(forward)
        print(f"  N×N row: round {round_} done", file=sys.stderr)
    return found


def nxn_table(found: dict, targets: list[str]) -> str:
    row, forward = statistics.median(found["e"]), statistics.median(found["f"])
    return ("| N×N row | targets | (e) row s | (f) forward passes alone s | (e) / (f) | per cell s |\n"
            "|---|---|---|---|---|---|\n"
            f"| one model | {len(targets)} | {row:.2f} | {forward:.2f} | {row / forward:.2f} | {row / len(targets):.2f} |")


def table(results: dict[str, dict]) -> str:
    lines = ["| strategy | (a) merge to disk s | (b) forward from disk s | (c) in-memory cell s "
             "| (d) (c) without shortcut s | (c) / ((a) + (b)) | (c): merge / load / forward s "
             "| agreed tensors (MB) | check on differing s | accuracy (c) / (d) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for strategy, found in results.items():
        median = {column: statistics.median(values) for column, values in found["seconds"].items()}
        parts = {key: statistics.median(p[key] for p in found["parts"]) for key in ("merge", "load", "forward")}
        details = found["details"]
        ratio = median["c"] / (median["a"] + median["b"])
        lines.append(
            f"| {strategy} | {median['a']:.2f} | {median['b']:.2f} | {median['c']:.2f} | {median['d']:.2f} "
            f"| {ratio:.2f} | {parts['merge']:.2f} / {parts['load']:.2f} / {parts['forward']:.2f} "
            f"| {details['agreed_tensors']} of {details['tensors']} ({details['agreed_bytes'] / 1e6:.1f}) "
            f"| {details['agreement_check_seconds']:.3f} "
            f"| {found['accuracy']['c']:.4f} / {found['accuracy']['d']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, help="folder of the source models")
    parser.add_argument("--pattern", default="e5-small_sib200_{locale}", help="model folder names, with {locale}")
    parser.add_argument("--base-model", type=Path, help="the base model (for strategies that read one)")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/sib200"))
    parser.add_argument("--target", default="sw-KE")
    parser.add_argument("--sources", default="de-DE,fr-FR,nl-NL,af-ZA,da-DK")
    parser.add_argument("--strategies", default="linear,ties")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 steadies a busy machine")
    parser.add_argument("--zoo", action="store_true", help="build a tiny zoo and data instead of --models and --data-dir")
    parser.add_argument("--nxn-targets", default="", help="also time an N×N row over these targets (comma-separated)")
    parser.add_argument("--skip-cells", action="store_true", help="only the N×N row")
    args = parser.parse_args()
    args.sources = args.sources.split(",")
    args.nxn_targets = [t for t in args.nxn_targets.split(",") if t]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="cell-cost-") as scratch:
        work = Path(scratch)
        if args.zoo:
            args.models, args.base_model, args.data_dir = tiny_setup(work, args.target, args.sources, args.pattern)
        elif args.models is None:
            parser.error("give --models FOLDER (or --zoo)")
        results = {} if args.skip_cells else {s: measure(args, s, work) for s in args.strategies.split(",")}
        nxn = measure_nxn(args, work) if args.nxn_targets else None
    threads = f", {args.threads} torch thread(s)" if args.threads else ""
    print(f"{os.cpu_count()} CPUs{threads}, load average {os.getloadavg()[0]:.2f} at the end; {len(args.sources)} sources "
          f"({', '.join(args.sources)}), target {args.target}, median of {args.repeats} repeats"
          f"{' (tiny zoo)' if args.zoo else ''}\n")
    if results:
        print(table(results))
    if nxn is not None:
        print("\n" + nxn_table(nxn, args.nxn_targets))


if __name__ == "__main__":
    main()
