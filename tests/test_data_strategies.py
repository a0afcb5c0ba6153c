"""Fisher and RegMean on tiny real classifiers: statistics, their cache, and the merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli, installed_registry

PATTERN = "xlm-roberta-base_massive_k_{locale}"
SIB200 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sib200"
TEXTS = [
    ("the team won the match", "sports"),
    ("the doctor and the virus", "health"),
    ("new film star and music", "entertainment"),
    ("vote law court election", "politics"),
    ("river mountain map border", "geography"),
    ("computer science data energy", "science/technology"),
    ("hotel flight travel city", "travel"),
    ("the player of the game", "sports"),
]


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.tsv"
    path.write_text("text\tcategory\n" + "".join(f"{t}\t{c}\n" for t, c in TEXTS), encoding="utf-8")
    return path


def _merge(runner, zoo_dir, out, strategy, data_file, stats_dir, *extra):
    return run_cli(runner, "merge", "--weighting", "manual", "--weights", "de-DE=0.5,nl-NL=0.3,sv-SE=0.2",
                   "--models", zoo_dir, "--strategy", strategy, "--data-file", data_file, "--stats-dir", stats_dir, "--output", out, "--no-progress", *extra)


def _independent_fisher(model_dir: Path) -> dict[str, torch.Tensor]:
    """Per-example gradients with torch.autograd.grad, squared and averaged."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    names, params = zip(*[(n, p) for n, p in model.named_parameters()])
    totals = [torch.zeros_like(p) for p in params]
    for text, label in TEXTS:
        logits = model(**tokenizer(text, return_tensors="pt")).logits[0]
        nll = -torch.log_softmax(logits, -1)[model.config.label2id[label]]
        for total, grad in zip(totals, torch.autograd.grad(nll, params, allow_unused=True)):
            if grad is not None:
                total += grad ** 2
    return {n: t / len(TEXTS) for n, t in zip(names, totals)}


def test_fisher_statistics_merge_and_cache(runner, zoo_dir, data_file, tmp_path):
    stats = tmp_path / "stats"
    out = tmp_path / "fisher"
    result = _merge(runner, zoo_dir, out, "fisher", data_file, stats, "--param", "examples=8")
    assert result.exit_code == 0, result.output
    details = json.loads((out / "merge_details.json").read_text())
    files = [Path(entry["file"]) for entry in details["statistics"]]
    assert [entry["reused"] for entry in details["statistics"]] == [False] * 3
    assert [f.name.split("-")[1] for f in files] == ["de", "nl", "sv"]

    # The stored Fisher equals an independent computation.
    fisher_de = load_file(files[0])
    reference = _independent_fisher(zoo_dir / PATTERN.format(locale="de-DE"))
    for name in ("classifier.out_proj.weight", "roberta.encoder.layer.0.attention.self.query.weight"):
        torch.testing.assert_close(fisher_de[name], reference[name], rtol=1e-4, atol=1e-10)

    # The merge is Σ w (F + ε) θ / Σ w (F + ε) with the stored Fisher.
    merged = load_file(out / "model.safetensors")
    weights = [0.5, 0.3, 0.2]
    thetas = [load_file(zoo_dir / PATTERN.format(locale=loc) / "model.safetensors") for loc in ("de-DE", "nl-NL", "sv-SE")]
    fishers = [load_file(f) for f in files]
    name = "roberta.encoder.layer.0.output.dense.weight"
    num = sum(w * (f[name].double() + 1e-8) * t[name].double() for w, f, t in zip(weights, fishers, thetas))
    den = sum(w * (f[name].double() + 1e-8) for w, f in zip(weights, fishers))
    torch.testing.assert_close(merged[name].double(), num / den, rtol=1e-5, atol=1e-7)

    # A second run reuses every statistics file; changed data makes new ones.
    again = tmp_path / "again"
    assert _merge(runner, zoo_dir, again, "fisher", data_file, stats, "--param", "examples=8").exit_code == 0
    assert [e["reused"] for e in json.loads((again / "merge_details.json").read_text())["statistics"]] == [True] * 3
    data_file.write_text(data_file.read_text() + "the city river\tgeography\n", encoding="utf-8")
    changed = tmp_path / "changed"
    assert _merge(runner, zoo_dir, changed, "fisher", data_file, stats, "--param", "examples=9").exit_code == 0
    assert [e["reused"] for e in json.loads((changed / "merge_details.json").read_text())["statistics"]] == [False] * 3
    assert len(list(stats.glob("fisher-*.safetensors"))) == 6 and not list(stats.glob(".*tmp*"))


def test_regmean_grams_and_merge(runner, zoo_dir, data_file, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "regmean"
    result = _merge(runner, zoo_dir, out, "regmean", data_file, tmp_path / "stats", "--param", "alpha=0.5")
    assert result.exit_code == 0, result.output
    files = [Path(e["file"]) for e in json.loads((out / "merge_details.json").read_text())["statistics"]]
    grams = [load_file(f) for f in files]

    # The classifier's out_proj sees tanh(dense(<s> state)): one vector per example.
    model_dir = zoo_dir / PATTERN.format(locale="de-DE")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        inputs = []
        for text, _ in TEXTS:
            hidden = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[-1]
            inputs.append(torch.tanh(model.classifier.dense(hidden[0, 0])))
        x = torch.stack(inputs)
    torch.testing.assert_close(grams[0]["classifier.out_proj.weight"], x.T @ x / len(TEXTS), rtol=1e-4, atol=1e-6)

    merged = load_file(out / "model.safetensors")
    thetas = [load_file(zoo_dir / PATTERN.format(locale=loc) / "model.safetensors") for loc in ("de-DE", "nl-NL", "sv-SE")]
    weights = [0.5, 0.3, 0.2]
    name = "roberta.encoder.layer.0.intermediate.dense.weight"
    regularised = [0.5 * g[name].double() + 0.5 * torch.diag(torch.diagonal(g[name].double())) for g in grams]
    a = sum(w * g for w, g in zip(weights, regularised))
    a = a + 1e-6 * torch.diagonal(a).mean() * torch.eye(a.shape[0], dtype=a.dtype)
    b = sum(w * t[name].double() @ g for w, t, g in zip(weights, thetas, regularised))
    torch.testing.assert_close(merged[name].double(), torch.linalg.solve(a, b.T).T, rtol=1e-4, atol=1e-6)
    # Non-linear tensors are the weighted average.
    name = "roberta.embeddings.word_embeddings.weight"
    torch.testing.assert_close(merged[name].double(), sum(w * t[name].double() for w, t in zip(weights, thetas)),
                               rtol=1e-6, atol=1e-7)


def test_labels_outside_the_model_are_an_error(runner, zoo_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nthe match,football\n", encoding="utf-8")
    result = _merge(runner, zoo_dir, tmp_path / "o", "fisher", bad, tmp_path / "stats")
    assert result.exit_code != 0
    assert "labels football of" in result.output and "not in the model's label space" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, message", [
    (("--param", "examples=0"), "parameter examples=0 of strategy 'fisher' is out of range; allowed: [1, inf)"),
    (("--max-length", "1"), "--max-length must be at least 2, got 1"),
    (("--data-dir", "/nonexistent/sib"), "--data-dir /nonexistent/sib is not a folder"),
])
def test_bad_data_options(runner, zoo_dir, data_file, tmp_path, extra, message):
    result = _merge(runner, zoo_dir, tmp_path / "o", "fisher", data_file, tmp_path / "stats", *extra)
    assert result.exit_code != 0 and message in result.output


@pytest.mark.skipif(not SIB200.is_dir(), reason="../shared/data/sib200 is not present")
def test_fisher_on_each_models_own_sib200_training_data(runner, zoo_dir, tmp_path):
    out = tmp_path / "sib"
    result = run_cli(runner, "merge", "--target-lang", "de-DE", "--num-languages", "2", "--models", zoo_dir,
                     "--strategy", "fisher", "--data-dir", SIB200,
                     "--param", "examples=4", "--stats-dir", tmp_path / "stats", "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output
    details = json.loads((out / "merge_details.json").read_text())
    assert details["data"]["data_dir"] == str(SIB200) and details["params"]["examples"] == 4
    assert len(details["statistics"]) == 2


@pytest.mark.parametrize("strategy", [
    "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs", "breadcrumbs_ties",
    "della", "della_linear", "karcher", "model_stock", "fisher_simple", "fisher", "regmean",
])
def test_every_strategy_from_the_cli_gives_a_working_classifier(runner, zoo_dir, data_file, tmp_path, strategy):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / strategy
    # Each strategy gets the options it reads (`mu merge` refuses the others).
    read = installed_registry().get("strategy", strategy).options_read()
    offered = {"base_model": ("--base-model", zoo_dir / "base"), "data_file": ("--data-file", data_file),
               "stats_dir": ("--stats-dir", tmp_path / "stats")}
    extra = [part for name, option in offered.items() if name in read for part in option]
    if "data_file" in read:  # fewer examples than the default 256: the data file has 8
        extra += ["--param", "examples=4"]
    result = run_cli(runner, "merge", "--target-lang", "de-DE", "--weighting", "uriel", "--strategy", strategy,
                     "--models", zoo_dir, *extra, "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output
    model = AutoModelForSequenceClassification.from_pretrained(out)
    logits = model(**AutoTokenizer.from_pretrained(out)(["the team won the match"], return_tensors="pt")).logits
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()
    merged = load_file(out / "model.safetensors")
    base = load_file(zoo_dir / "base" / "model.safetensors")
    name = "roberta.encoder.layer.0.attention.self.query.weight"
    if strategy == "model_stock":
        # The zoo's task vectors are independent noise (cosine ≈ 0), so Model Stock's ratio
        # t = K·cos/(1+(K−1)·cos) is ≈ 0 and the merge stays at the base: correct behaviour.
        torch.testing.assert_close(merged[name], base[name], rtol=0, atol=2e-3)
    else:
        assert not torch.equal(merged[name], base[name])
    assert json.loads((out / "merge_details.json").read_text())["strategy"] == strategy
