"""Datasets, `mu train`, `mu evaluate`, `mu evaluate-encoder` and `mu nxn` on tiny models and data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import WORDS, run_cli, installed_registry
from merginguriel_core.errors import ConfigError
from merginguriel_core.evaluation import best_overall_zero_shot, best_source
from merginguriel_core.maths.metrics import accuracy, macro_f1

SIB200 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sib200"
PATTERN = "xlm-roberta-base_massive_k_{locale}"


# ------------------------------------------------------------------- datasets
def test_sib200_dataset_reads_local_folders(sib_dir):
    data = installed_registry().get("dataset", "sib200")
    assert data.locales(str(sib_dir)) == ["af-ZA", "de-DE", "nl-NL", "sw-KE"]
    test = data.load(str(sib_dir), "sw-KE", "test")
    # conftest's _sib_folder: 3 test rows for each of the 7 labels, in WORDS' order ("sports" first)
    assert len(test) == 21 and test.labels[0] == "sports"
    assert sorted(set(test.labels)) == sorted(WORDS) and all(test.labels.count(label) == 3 for label in WORDS)
    assert data.labels(str(sib_dir))[0] == "science/technology" and len(data.labels(None)) == 7
    with pytest.raises(ConfigError, match=r"has no data for fr-FR; it has af-ZA, de-DE, nl-NL, sw-KE"):
        data.load(str(sib_dir), "fr-FR", "test")
    with pytest.raises(ConfigError, match=r"unknown split 'valid'; allowed: train, dev, test"):
        data.load(str(sib_dir), "de-DE", "valid")


@pytest.mark.skipif(not SIB200.is_dir(), reason="../shared/data/sib200 is not present")
def test_sib200_real_data_has_all_massive_languages():
    data = installed_registry().get("dataset", "sib200")
    assert len(data.locales(str(SIB200))) == 52
    test = data.load(str(SIB200), "swh_Latn", "test")
    assert len(test) == 204 and set(test.labels) == set(data.labels(str(SIB200)))


def test_massive_local_jsonl(tmp_path):
    rows = [
        {"locale": "sw-KE", "partition": "train", "intent": "alarm_set", "utt": "niamshe saa kumi"},
        {"locale": "sw-KE", "partition": "test", "intent": "weather_query", "utt": "hali ya hewa leo"},
        {"locale": "sw-KE", "partition": "test", "intent": "play_music", "utt": "cheza muziki"},
    ]
    (tmp_path / "sw-KE.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = installed_registry().get("dataset", "massive")
    test = data.load(str(tmp_path), "swh_Latn", "test")
    assert test.texts == ["hali ya hewa leo", "cheza muziki"] and test.labels == ["weather_query", "play_music"]
    labels = data.labels(str(tmp_path))
    assert len(labels) == 60 and labels.index("weather_query") == 59
    with pytest.raises(ConfigError, match=r"partition dev is empty"):
        data.load(str(tmp_path), "sw-KE", "dev")
    with pytest.raises(ConfigError, match=r"de-DE.jsonl does not exist"):
        data.load(str(tmp_path), "de-DE", "test")


def test_table_dataset_with_locale_and_split_columns(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label,locale,split\na b,x,de-DE,test\nc d,y,deu,test\ne f,x,nl-NL,test\ng,y,de-DE,train\n")
    data = installed_registry().get("dataset", "table")
    assert data.labels(str(path)) == ["x", "y"] and data.locales(str(path)) == ["de-DE", "nl-NL"]
    assert data.load(str(path), "de-DE", "test").texts == ["a b", "c d"]


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("sentence,tag\nhello,x\n")
    with pytest.raises(ConfigError, match=r"has no label column; expected one of label, category, intent, found sentence, tag"):
        installed_registry().get("dataset", "table").labels(str(path))


# -------------------------------------------------------------------- metrics
def test_metrics_against_hand_computation():
    predictions = np.array([0, 0, 1, 2, 2, 2])
    labels = np.array([0, 1, 1, 2, 2, 0])
    assert accuracy(predictions, labels) == pytest.approx(4 / 6)
    # F1 per class: 0 -> 2·1/(2+2)=0.5, 1 -> 2·1/(1+2)=2/3, 2 -> 2·2/(3+2)=0.8 ; class 3 absent from both.
    assert macro_f1(predictions, labels, 4) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)


def test_baselines_from_a_matrix():
    matrix = pd.DataFrame({"a": [0.9, 0.6, 0.7], "b": [0.5, 0.95, 0.8], "c": [0.4, 0.3, 0.99]}, index=["a", "b", "c"])
    assert best_overall_zero_shot(matrix, "a") == ("c", 0.7)
    assert best_overall_zero_shot(matrix, "c") == ("a", 0.4)
    assert best_source(matrix, "b", ["a", "c"]) == ("c", 0.8)
    with pytest.raises(ConfigError, match="target d is not a column"):
        best_overall_zero_shot(matrix, "d")


# ----------------------------------------------------------------------- train
def test_train_batch_saves_models_with_labels_and_details(trained):
    from transformers import AutoModelForSequenceClassification

    for locale in ("af-ZA", "de-DE", "nl-NL", "sw-KE"):
        folder = trained / PATTERN.format(locale=locale)
        details = json.loads((folder / "training_details.json").read_text())
        assert details["locale"] == locale and details["train_examples"] == 42 and details["steps"] == 6 * 6
        assert 0 <= details["dev_accuracy"] <= 1 and details["labels"][0] == "science/technology"
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        assert model.config.id2label[3] == "sports"
    # Learned something on this easy data: training loss below chance (ln 7 = 1.95), dev accuracy above 1/7.
    assert json.loads((trained / PATTERN.format(locale="de-DE") / "training_details.json").read_text())["final_train_loss"] < 1.8
    assert json.loads((trained / PATTERN.format(locale="de-DE") / "training_details.json").read_text())["dev_accuracy"] > 0.3


def test_train_batch_resumes_without_retraining(runner, zoo_dir, sib_dir, trained):
    before = (trained / PATTERN.format(locale="de-DE") / "model.safetensors").stat().st_mtime_ns
    result = run_cli(runner, "train", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, "--locales",
                     "af-ZA,de-DE,nl-NL,sw-KE", "--output-dir", trained, "--max-length", "16", "--no-progress")
    assert result.exit_code == 0
    assert result.output.count("already trained") == 4
    assert (trained / PATTERN.format(locale="de-DE") / "model.safetensors").stat().st_mtime_ns == before


def test_train_freeze_embeddings_keeps_them(runner, zoo_dir, sib_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "not-yet" / "frozen"  # missing folders above an output are made
    result = run_cli(runner, "train", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, "--locale", "de-DE",
                     "--output", out, "--epochs", "1", "--freeze-embeddings", "--max-length", "16", "--no-progress")
    assert result.exit_code == 0, result.output
    trained, base = load_file(out / "model.safetensors"), load_file(zoo_dir / "base" / "model.safetensors")
    name = "roberta.embeddings.word_embeddings.weight"
    assert torch.equal(trained[name], base[name])
    assert not torch.equal(trained["roberta.encoder.layer.0.attention.self.query.weight"],
                           base["roberta.encoder.layer.0.attention.self.query.weight"])


@pytest.mark.parametrize("args, message", [
    (("--locale", "fr-FR", "--output", "OUT"), "has no data for fr-FR; it has af-ZA, de-DE, nl-NL, sw-KE"),
    (("--locale", "de-DE"), "--locale needs --output FOLDER"),
    (("--locale", "de-DE", "--output", "OUT", "--epochs", "0"), "--epochs must be positive, got 0.0"),
    (("--locale", "de-DE", "--output", "OUT", "--dataset", "nope"), "unknown --dataset 'nope'; available: massive, sib200, table"),
])
def test_train_bad_input(runner, zoo_dir, sib_dir, tmp_path, args, message):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = run_cli(runner, "train", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, *args)
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------- evaluate
def test_evaluate_reports_accuracy_and_f1_and_caches(runner, trained, sib_dir, tmp_path):
    model = trained / PATTERN.format(locale="sw-KE")
    args = ("evaluate", "--model", model, "--data-dir", sib_dir, "--locale", "sw-KE", "--cache-dir", tmp_path / "c")
    first = json.loads(run_cli(runner, *args).output)
    assert first["examples"] == 21 and first["cached"] is False
    assert set(first) >= {"accuracy", "macro_f1"} and 0 <= first["accuracy"] <= 1
    second = json.loads(run_cli(runner, *args).output)
    assert second["cached"] is True and second["accuracy"] == first["accuracy"]
    # Same numbers as computing by hand from the model.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = installed_registry().get("dataset", "sib200").load(str(sib_dir), "sw-KE", "test")
    m, t = AutoModelForSequenceClassification.from_pretrained(model).eval(), AutoTokenizer.from_pretrained(model)
    with torch.no_grad():
        predicted = m(**t(data.texts, return_tensors="pt", padding=True)).logits.argmax(-1).tolist()
    gold = [m.config.label2id[label] for label in data.labels]
    assert first["accuracy"] == pytest.approx(np.mean(np.array(predicted) == np.array(gold)))


def test_evaluate_rejects_a_different_label_space(runner, zoo_dir, sib_dir, tmp_path):
    config = json.loads((zoo_dir / PATTERN.format(locale="de-DE") / "config.json").read_text())
    assert config["id2label"]["0"] == "science/technology"
    csv = tmp_path / "t.csv"
    csv.write_text("text,label,locale,split\nthe match,sports,de-DE,test\nthe film,cinema,de-DE,test\n")
    result = run_cli(runner, "evaluate", "--model", zoo_dir / PATTERN.format(locale="de-DE"), "--dataset", "table",
                     "--data-file", csv, "--locale", "de-DE")
    assert result.exit_code != 0 and "not the model's: cinema" in result.output


def test_evaluate_encoder_spearman(runner, zoo_dir, tmp_path):
    sts = tmp_path / "sts.tsv"
    sts.write_text("sentence1\tsentence2\tscore\nthe team\tthe team\t5\nthe film star\tthe film\t4\n"
                   "the doctor\tthe river map\t0.5\nthe vote\tthe court law\t2\n")
    result = run_cli(runner, "evaluate-encoder", "--model", zoo_dir / "base", "--data-file", sts)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["pairs"] == 4 and -1 <= data["spearman"] <= 1
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nx\ty\n")
    result = run_cli(runner, "evaluate-encoder", "--model", zoo_dir / "base", "--data-file", bad)
    assert result.exit_code != 0 and "needs the columns sentence1, sentence2 and score" in result.output


# ------------------------------------------------------------------------- nxn
def test_nxn_matrix_cache_and_rerun(runner, trained, sib_dir, tmp_path):
    out = tmp_path / "nxn"
    args = ("nxn", "--models", trained, "--data-dir", sib_dir, "--output", out, "--cache-dir", tmp_path / "cache",
            "--no-progress")
    result = run_cli(runner, *args)
    assert result.exit_code == 0, result.output
    matrix = pd.read_csv(out / "evaluation_matrix.csv", index_col="source")
    assert list(matrix.index) == ["af-ZA", "de-DE", "nl-NL", "sw-KE"] and list(matrix.columns) == list(matrix.index)
    assert ((matrix >= 0) & (matrix <= 1)).all().all()
    assert (out / "evaluation_matrix_macro_f1.csv").is_file()
    assert (out / "evaluation_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the heatmap
    details = json.loads((out / "nxn_details.json").read_text())
    assert details["cells"] == 16 and details["forward_passes"] == 16 and details["cache_hits"] == 0
    baselines = pd.read_csv(out / "baselines.csv", index_col="target")
    expected_source = matrix["sw-KE"].drop("sw-KE").idxmax()
    assert baselines.at["sw-KE", "best_zero_shot_source"] == expected_source
    # The diagonal equals `mu evaluate` on the same cell.
    single = json.loads(run_cli(runner, "evaluate", "--model", trained / PATTERN.format(locale="nl-NL"), "--data-dir",
                                sib_dir, "--locale", "nl-NL", "--cache-dir", tmp_path / "cache").output)
    assert single["cached"] is True and round(single["accuracy"], 4) == matrix.at["nl-NL", "nl-NL"]
    # Refuses to replace results; a rerun with --overwrite needs no forward pass.
    assert "already exists; pass --overwrite" in run_cli(runner, *args).output
    assert run_cli(runner, *args, "--overwrite").exit_code == 0
    details = json.loads((out / "nxn_details.json").read_text())
    assert details["forward_passes"] == 0 and details["cache_hits"] == 16


def test_nxn_interrupted_then_finished(runner, trained, sib_dir, tmp_path, monkeypatch):
    """An interrupted N×N keeps its finished cells in the cache; the rerun computes only the rest."""
    import merginguriel_core.evaluation as evaluation

    cache = tmp_path / "cache"
    original = evaluation.score
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(evaluation, "score", failing)
    out = tmp_path / "nxn"
    interrupted = run_cli(runner, "nxn", "--models", trained, "--data-dir", sib_dir, "--output", out, "--cache-dir",
                          cache, "--no-progress")
    assert interrupted.exit_code == 130  # Ctrl-C
    assert not (out / "evaluation_matrix.csv").exists()
    monkeypatch.setattr(evaluation, "score", original)
    assert run_cli(runner, "nxn", "--models", trained, "--data-dir", sib_dir, "--output", out, "--cache-dir", cache,
                   "--no-progress").exit_code == 0
    details = json.loads((out / "nxn_details.json").read_text())
    assert details["cache_hits"] == 5 and details["forward_passes"] == 11


def test_changed_model_invalidates_its_cache_entries(runner, trained, sib_dir, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained, models)
    args = ("nxn", "--models", models, "--data-dir", sib_dir, "--output", tmp_path / "n", "--cache-dir", tmp_path / "c",
            "--no-progress", "--overwrite")
    assert run_cli(runner, *args).exit_code == 0
    weights = models / PATTERN.format(locale="de-DE") / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same bytes, new modification time: treated as changed
    assert run_cli(runner, *args).exit_code == 0
    details = json.loads((tmp_path / "n" / "nxn_details.json").read_text())
    assert details["forward_passes"] == 4 and details["cache_hits"] == 12


def test_train_hub_model_offline_is_one_line(runner, sib_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli(runner, "train", "--base-model", "xlm-roberta-base", "--data-dir", sib_dir, "--locale", "de-DE",
                     "--output", tmp_path / "out", "--no-progress")
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot load xlm-roberta-base:") and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_length_grouped_batches_cover_every_example_once_and_pad_little():
    import random

    from merginguriel_core.training import length_grouped_batches

    lengths = [random.Random(i).randint(3, 90) for i in range(1000)]
    batches = length_grouped_batches(lengths, 16, torch.Generator().manual_seed(0), group_factor=10)
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    # six groups of 160 (ten full batches each), then 40 left: 16 + 16 + 8
    assert sorted(len(b) for b in batches) == [8] + [16] * 62
    padded = sum(16 * max(lengths[i] for i in batch) for batch in batches)
    shuffled = [list(range(1000))[i:i + 16] for i in range(0, 1000, 16)]
    assert padded < 0.75 * sum(16 * max(lengths[i] for i in batch) for batch in shuffled)
    again = length_grouped_batches(lengths, 16, torch.Generator().manual_seed(0), group_factor=10)
    assert again == batches  # the seed decides
    assert length_grouped_batches(lengths, 16, torch.Generator().manual_seed(1), group_factor=10) != batches


def test_predict_logits_returns_rows_in_the_order_of_the_texts(trained):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from merginguriel_core.training import predict_logits

    folder = trained / PATTERN.format(locale="de-DE")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = ["the " + "word " * n for n in (1, 9, 3, 12, 5)]
    together = predict_logits(model, tokenizer, texts, 2, 16, torch.device("cpu"))
    alone = np.concatenate([predict_logits(model, tokenizer, [text], 1, 16, torch.device("cpu")) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert predict_logits(model, tokenizer, [], 2, 16, torch.device("cpu")).shape == (0, model.config.num_labels)
