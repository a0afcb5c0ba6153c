"""Target-aware merging: per-tensor-group weights honoured by every strategy, unlabelled target
text (``--target-text``, ``--target-text-split``) that is never read for its labels, and the
``adamerging`` and ``representation`` weightings."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli

from merginguriel_core.errors import ConfigError
from merginguriel_core.groups import GroupWeights, tensor_group
from merginguriel_core.merge import SourceModel, merge_state_dict, run_merge
from merginguriel_core.plan import plan_merge
from merginguriel_core.selection import SelectionOptions
from merginguriel_core.target_text import TargetText

PATTERN = "xlm-roberta-base_massive_k_{locale}"
ZOO_THREE = ("de-DE", "nl-NL", "sw-KE")


# ----------------------------------------------------------------- per-group weights
def test_tensor_groups_of_an_encoder():
    assert tensor_group("roberta.encoder.layer.11.attention.self.query.weight", "layer") == "layer.11"
    assert tensor_group("roberta.embeddings.word_embeddings.weight", "layer") == "embeddings"
    assert tensor_group("classifier.out_proj.bias", "layer") == "head"
    assert tensor_group("classifier.out_proj.bias", "model") == "model"
    assert tensor_group("classifier.out_proj.bias", "tensor") == "classifier.out_proj.bias"
    with pytest.raises(ConfigError, match="unknown grouping 'block'; allowed: layer, tensor, model"):
        tensor_group("x", "block")


def test_group_weights_must_be_non_negative_and_one_per_source():
    with pytest.raises(ConfigError, match="group 'head' has 1 weights for 2 sources"):
        GroupWeights("layer", ("a", "b"), {"head": (1.0,)})
    with pytest.raises(ConfigError, match="negative or not finite"):
        GroupWeights("layer", ("a", "b"), {"head": (1.0, -0.5)})
    groups = GroupWeights("layer", ("a", "b"), {"head": (3.0, 1.0)}).normalised().reordered(("b", "a"))
    assert groups.groups["head"] == (0.25, 0.75)


def _three(zoo_dir: Path, weights=(1 / 3, 1 / 3, 1 / 3)) -> list[SourceModel]:
    return [SourceModel(locale, zoo_dir / PATTERN.format(locale=locale), w) for locale, w in zip(ZOO_THREE, weights)]


DATA_FREE = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "della", "karcher",
             "model_stock", "fisher_simple")


@pytest.mark.parametrize("strategy", DATA_FREE)
def test_every_strategy_merges_each_group_with_its_own_weights(zoo_dir, registry, strategy):
    """Group weights give each tensor of a group exactly the merge that those weights give the
    whole model; tensors of unlisted groups keep the sources' weights."""
    if strategy not in registry.names("strategy"):
        pytest.skip(f"{strategy} is not installed")
    layer, head = (0.6, 0.3, 0.1), (0.1, 0.1, 0.8)
    groups = GroupWeights("layer", ZOO_THREE, {"layer.0": layer, "head": head})
    base = zoo_dir / "base" if registry.get("strategy", strategy).needs_base else None
    grouped = merge_state_dict(plan_merge(None, strategy=strategy, sources=_three(zoo_dir), base_model=base,
                                          group_weights=groups, registry=registry, progress=False))
    plain = {name: merge_state_dict(plan_merge(None, strategy=strategy, sources=_three(zoo_dir, w), base_model=base,
                                               registry=registry, progress=False))
             for name, w in (("layer.0", layer), ("head", head), ("embeddings", (1 / 3,) * 3))}
    for tensor, value in grouped.items():
        expected = plain[tensor_group(tensor, "layer")][tensor]
        assert torch.allclose(value, expected, atol=1e-6), tensor
    assert not torch.allclose(plain["layer.0"]["classifier.dense.weight"], plain["head"]["classifier.dense.weight"])


def test_a_merged_folder_records_the_group_weights(zoo_dir, tmp_path, registry):
    groups = GroupWeights("layer", ZOO_THREE, {"layer.0": (2, 1, 1), "head": (0, 0, 1)})
    plan = plan_merge(tmp_path / "out", sources=_three(zoo_dir), group_weights=groups, registry=registry,
                      progress=False)
    run_merge(plan)
    details = json.loads((tmp_path / "out" / "merge_details.json").read_text())
    assert details["group_weights"] == {"grouping": "layer", "sources": list(ZOO_THREE),
                                        "groups": {"layer.0": [0.5, 0.25, 0.25], "head": [0.0, 0.0, 1.0]}}
    text = (tmp_path / "out" / "merge_details.txt").read_text()
    assert "Weights per tensor group (layer; group_weights.png)" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.split("group_weights.png)\n")[1].splitlines() if line}
    assert rows["Group"] == list(ZOO_THREE) and rows["layer.0"] == ["0.5000", "0.2500", "0.2500"]
    assert (tmp_path / "out" / "group_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ target text
def _text(tmp_path: Path, lines: list[str], name: str = "text.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


SENTENCES = ["the team match player game", "doctor virus health", "vote law court election", "hotel flight travel",
             "river mountain map border", "film music star", "computer science data energy"] * 3


def test_bad_target_text_is_refused_in_one_line(runner, zoo_dir, tmp_path):
    models = ["--models", zoo_dir, "--target-lang", "af-ZA", "-o", tmp_path / "out"]
    cases = [
        (["--weighting", "adamerging"], "weighting 'adamerging' needs unlabelled target text; pass --target-text FILE"),
        (["--weighting", "adamerging", "--target-text", tmp_path / "missing.txt"],
         f"--target-text {tmp_path / 'missing.txt'} does not exist"),
        (["--weighting", "adamerging", "--target-text", _text(tmp_path, ["", "  "], "blank.txt")],
         "holds no text; give one sentence per line"),
        (["--target-text", _text(tmp_path, SENTENCES)],
         "--target-text is not read by --weighting uriel (read by adamerging, representation)"),
        (["--weighting", "adamerging", "--target-text-split", "validation", "--data-dir", tmp_path],
         "unknown --target-text-split 'validation'; allowed: train, dev, test"),
        (["--weighting", "representation", "--target-text", _text(tmp_path, SENTENCES)],
         "weighting 'representation' needs the base encoder: pass --weighting-param encoder=PATH_OR_HUB_ID"),
    ]
    for extra, message in cases:
        result = run_cli(runner, "merge", *models, *extra)
        assert result.exit_code == 1, (extra, result.output)
        assert message in result.output, (extra, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not (tmp_path / "out").exists()


def test_a_budget_larger_than_the_text_and_an_unknown_script_are_said(runner, zoo_dir, tmp_path):
    unknown = _text(tmp_path, ["ሰላም ለዓለም ሁሉ", "ይህ የአማርኛ ጽሑፍ ነው"], "amharic.txt")
    result = run_cli(runner, "merge", "--models", zoo_dir, "--target-lang", "am-ET", "--weighting", "adamerging",
                     "--target-text", unknown, "--weighting-param", "max_sentences=5,steps=1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "asked for 5 sentences of the target text, it has 2; using all 2" in result.output
    assert "100% of the target text's tokens (am-ET) are unknown to the tokenizer" in result.output


# --------------------------------------------------------------------------- adamerging
def _ada(trained: Path, text: TargetText, registry, **params):
    options = SelectionOptions(target="af-ZA", weighting="adamerging", target_text=text,
                               source_langs=("de-DE", "nl-NL", "sw-KE"), weighting_params=params)
    return plan_merge(None, selection=options, models=trained, registry=registry, progress=False)


def test_adamerging_learns_per_layer_weights_that_lower_the_entropy(trained, tmp_path, registry):
    plan = _ada(trained, TargetText(file=_text(tmp_path, SENTENCES)), registry, steps=25, learning_rate=0.2)
    details = plan.selection.result.details
    assert details["entropy_after"] < details["entropy_before"] - 1e-3
    assert details["entropies"][-1] < details["entropies"][0]
    groups = plan.group_weights
    assert groups is not None and groups.grouping == "layer" and set(groups.groups) >= {"layer.0", "head"}
    start = [details["start_weights"][locale] for locale in groups.locales]
    for weights in groups.groups.values():
        assert math.isclose(sum(weights), 1.0, abs_tol=1e-9) and min(weights) >= 0
    assert max(abs(a - b) for ws in groups.groups.values() for a, b in zip(ws, start)) > 0.01
    # The merge uses them: a plan with the learned group weights passed by hand is the same merge.
    by_hand = plan_merge(None, sources=plan.sources, group_weights=groups, registry=registry, progress=False)
    a, b = merge_state_dict(plan), merge_state_dict(by_hand)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_adamerging_with_zero_steps_keeps_the_start_in_every_group(trained, tmp_path, registry):
    plan = _ada(trained, TargetText(file=_text(tmp_path, SENTENCES)), registry, steps=0, grouping="tensor")
    start = plan.selection.result.details["start_weights"]
    for weights in plan.group_weights.groups.values():
        assert weights == pytest.approx([start[locale] for locale in plan.group_weights.locales], abs=1e-6)


def test_adamerging_with_zero_steps_is_the_start_weightings_merge(trained, tmp_path, registry):
    plan = _ada(trained, TargetText(file=_text(tmp_path, SENTENCES)), registry, steps=0)
    start = plan_merge(None, selection=SelectionOptions(target="af-ZA", weighting="softmax",
                                                        source_langs=("de-DE", "nl-NL", "sw-KE")),
                       models=trained, registry=registry, progress=False)
    assert dict(plan.weights) == pytest.approx(dict(start.weights))
    ours, theirs = merge_state_dict(plan), merge_state_dict(start)
    assert all(torch.allclose(ours[name], theirs[name], atol=1e-6) for name in ours)


def test_adamerging_keeps_identical_sources_at_their_start(zoo_dir, tmp_path, registry):
    models = tmp_path / "same"
    for locale in ("de-DE", "nl-NL"):
        shutil.copytree(zoo_dir / PATTERN.format(locale="de-DE"), models / PATTERN.format(locale=locale))
    options = SelectionOptions(target="af-ZA", weighting="adamerging", target_text=TargetText(file=_text(tmp_path, SENTENCES)),
                               weighting_params={"steps": 10, "learning_rate": 0.5})
    selection = plan_merge(None, selection=options, models=models, registry=registry, progress=False).selection
    assert selection.group_weights is None
    assert dict(selection.weights) == pytest.approx(selection.result.details["start_weights"])
    assert "the sources agree on every tensor; the start weights are kept" in selection.notes


def test_the_labels_of_the_target_split_are_never_read(trained, sib_dir, tmp_path, registry):
    shuffled = tmp_path / "shuffled"
    shutil.copytree(sib_dir, shuffled)
    dev = shuffled / "afr_Latn" / "dev.tsv"
    header, *rows = dev.read_text(encoding="utf-8").splitlines()
    labels = [row.split("\t")[1] for row in rows]
    random.Random(0).shuffle(labels)
    rows = ["\t".join([row.split("\t")[0], label, row.split("\t")[2]]) for row, label in zip(rows, labels)]
    assert rows != dev.read_text(encoding="utf-8").splitlines()[1:]
    dev.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    for weighting, params in (("adamerging", {"steps": 5}), ("representation", {"encoder": str(trained / PATTERN.format(locale="de-DE"))})):
        picked = []
        for folder in (sib_dir, shuffled):
            options = SelectionOptions(target="af-ZA", weighting=weighting, weighting_params=params,
                                       target_text=TargetText(split="dev", location=str(folder)),
                                       source_langs=("de-DE", "nl-NL", "sw-KE"))
            plan = plan_merge(None, selection=options, models=trained, registry=registry, progress=False)
            picked.append((plan.weights, plan.group_weights))
        assert picked[0] == picked[1], weighting


# ------------------------------------------------------------------------ representation
#: Three "languages" with disjoint vocabularies the zoo's tokenizer knows.
VOCABULARY = {"de-DE": "team match player game city", "nl-NL": "river mountain map border travel",
              "sw-KE": "doctor virus health science data"}
CODES = {"de-DE": "deu_Latn", "nl-NL": "nld_Latn", "sw-KE": "swh_Latn", "af-ZA": "afr_Latn"}


def _disjoint_data(root: Path) -> Path:
    rng = random.Random(0)
    for locale, words in {**VOCABULARY, "af-ZA": VOCABULARY["nl-NL"]}.items():
        (root / CODES[locale]).mkdir(parents=True)
        rows = ["index_id\tcategory\ttext"] + [
            f"{i}\tsports\tthe {' '.join(rng.sample(words.split(), 4))}" for i in range(12)]
        for split in ("train", "dev", "test"):
            (root / CODES[locale] / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_representation_ranks_the_source_whose_text_is_like_the_targets_first(zoo_dir, tmp_path, registry):
    data = _disjoint_data(tmp_path / "data")
    options = SelectionOptions(target="af-ZA", weighting="representation", num_languages=3,
                               target_text=TargetText(split="dev", location=str(data)),
                               source_langs=("de-DE", "nl-NL", "sw-KE"),
                               weighting_params={"encoder": str(zoo_dir / "base"), "neighbours": 3})
    plan = plan_merge(None, selection=options, models=zoo_dir, registry=registry, progress=False)
    details = plan.selection.result.details
    shares = details["representation_share"]
    assert max(shares, key=shares.get) == "nl-NL" and shares["nl-NL"] > 0.5
    assert math.isclose(sum(shares.values()), 1.0)
    assert plan.weights[0][0] == "nl-NL"
    # mix=1 is URIEL alone: the scores are the similarities normalised over the candidates.
    uriel = plan_merge(None, selection=SelectionOptions(**{**vars(options), "weighting_params": {
        "encoder": str(zoo_dir / "base"), "mix": 1.0}}), models=zoo_dir, registry=registry, progress=False)
    similarity = uriel.selection.result.details["uriel_similarity"]
    total = sum(similarity.values())
    assert dict(uriel.weights) == pytest.approx({locale: s / total for locale, s in similarity.items()})


def test_similarity_explain_shows_both_signals_side_by_side(runner, zoo_dir, tmp_path):
    data = _disjoint_data(tmp_path / "data")
    result = run_cli(runner, "similarity", "--target-lang", "af-ZA", "--explain", "--weighting", "representation",
                     "--weighting-param", f"encoder={zoo_dir / 'base'},mix=0.5", "--target-text-split", "dev",
                     "--data-dir", data, "--source-langs", "de-DE,nl-NL,sw-KE", "--plot", tmp_path / "w.png")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("rank"))
    assert "URIEL similarity" in header and "representation share" in header and "score (mix 0.5)" in header
    assert (tmp_path / "w.png").is_file()


def test_ensemble_and_merge_cli_take_the_target_text(runner, trained, sib_dir, tmp_path):
    encoder = trained / PATTERN.format(locale="de-DE")
    common = ["--models", trained, "--target-lang", "af-ZA", "--weighting", "representation", "--weighting-param",
              f"encoder={encoder}", "--target-text-split", "dev", "--data-dir", sib_dir, "--num-languages", "2"]
    ensemble = run_cli(runner, "ensemble", *common, "--voting-method", "entropy_min", "--max-length", "16",
                       "--no-baselines", "--no-cache")
    assert ensemble.exit_code == 0, ensemble.output
    report = json.loads(ensemble.output[ensemble.output.index("{"):])
    assert 0.0 <= report["accuracy"] <= 1.0 and len(report["sources"]) == 2
    merged = run_cli(runner, "merge", *common, "-o", tmp_path / "merged", "--no-progress")
    assert merged.exit_code == 0, merged.output
    details = json.loads((tmp_path / "merged" / "merge_details.json").read_text())
    assert details["weighting"] == "representation" and details["data"] is None
    assert details["weighting_details"]["target_text"]["split"] == "dev"
    # Both doors choose the same sources with the same weights from the same text.
    ensembled = {source["locale"]: source["weight"] for source in report["sources"]}
    assert ensembled == pytest.approx({s["locale"]: s["weight"] for s in details["sources"]})


# ------------------------------------------------------------------------------- specs
def _spec(tmp_path: Path, trained: Path, zoo_dir: Path, sib_dir: Path, **changes) -> Path:
    spec = {
        "name": "target-aware",
        "models": {"folder": str(trained), "pattern": PATTERN, "base": str(trained / PATTERN.format(locale="de-DE"))},
        "data": {"dataset": "sib200", "data_dir": str(sib_dir), "split": "test", "max_length": 16, "batch_size": 8},
        "targets": ["af-ZA"],
        "selection": {"num_languages": 2},
        "target_text": {"split": "dev"},
        "selections": ["softmax", {"weighting": "adamerging", "params": {"steps": 3}}, "representation"],
        "strategies": [{"strategy": "linear"}],
        "voting": [{"voting": "entropy_min", "selections": ["softmax"]}],
        "baselines": ["english"],
    }
    spec.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_a_spec_runs_target_aware_selections(tmp_path, trained, zoo_dir, sib_dir):
    from merginguriel_core.experiments.results import iter_cells
    from merginguriel_core.experiments.runner import run_experiment

    run_experiment(_spec(tmp_path, trained, zoo_dir, sib_dir), tmp_path / "results", progress=False)
    records = {record["cell"]: record for _, record, _ in iter_cells(tmp_path / "results") if record is not None}
    for cell in ("af-ZA/merge-linear@adamerging", "af-ZA/merge-linear@representation", "af-ZA/vote-entropy_min@softmax"):
        assert records[cell]["status"] == "done", records[cell]
        assert 0.0 <= records[cell]["metrics"]["accuracy"] <= 1.0
    assert "target_text" in records["af-ZA/merge-linear@adamerging"]["definition"]
    assert "target_text" not in records["af-ZA/merge-linear@softmax"]["definition"]
    # The report sets each target-text selection beside the same method under softmax.
    from merginguriel_core.experiments.report import write_report

    report = write_report(tmp_path / "results", tmp_path / "report")
    by_method = {entry["method"]: entry for entry in report.summary}
    compared = by_method["merge-linear@adamerging"]["comparisons"]["softmax"]
    assert compared["n"] == 1 and compared["against"] == "merge-linear@softmax"
    assert "softmax" not in by_method["merge-linear@softmax"]["comparisons"]
    assert "Does a method that reads target text beat the same method under softmax?" in \
        (tmp_path / "report" / "report.md").read_text()


def test_a_spec_gives_target_text_exactly_to_the_selections_that_read_it(tmp_path, trained, zoo_dir, sib_dir, registry):
    from merginguriel_core.experiments.spec import load_spec

    with pytest.raises(ConfigError, match=r"selections\[1\]: weighting 'adamerging' needs unlabelled target text"):
        load_spec(_spec(tmp_path, trained, zoo_dir, sib_dir, target_text=None), registry)
    with pytest.raises(ConfigError, match="target_text: no selection reads it"):
        load_spec(_spec(tmp_path, trained, zoo_dir, sib_dir, selections=["softmax"]), registry)
    with pytest.raises(ConfigError, match="target_text.split: unknown split 'validation'"):
        load_spec(_spec(tmp_path, trained, zoo_dir, sib_dir, target_text={"split": "validation"}), registry)
