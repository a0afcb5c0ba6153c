"""LoRA adapter folders read as whole models (the reading side of issue #17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from merginguriel_core.adapters import AdapterSource, LoraConfig, is_adapter
from merginguriel_core.errors import ModelError
from merginguriel_core.io import TensorSource

QUERY = "roberta.encoder.layer.0.attention.self.query"


def _adapter(folder: Path, base: Path, rank: int = 2, alpha: float = 4.0, **config) -> dict[str, torch.Tensor]:
    """A hand-written peft LoRA folder on ``base``'s query weight and a whole classifier head."""
    generator = torch.Generator().manual_seed(0)
    with TensorSource(base) as model:
        out, inp = model.info(f"{QUERY}.weight").shape
        head = model.get("classifier.out_proj.weight")
    tensors = {
        f"base_model.model.{QUERY}.lora_A.weight": torch.randn(rank, inp, generator=generator),
        f"base_model.model.{QUERY}.lora_B.weight": torch.randn(out, rank, generator=generator),
        "base_model.model.classifier.out_proj.weight": head + 1.0,
    }
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": ["query"],
         "modules_to_save": ["classifier"], "base_model_name_or_path": str(base), **config}))
    return tensors


def test_an_adapter_reads_as_base_plus_scaled_low_rank_update(zoo_dir, tmp_path):
    base = zoo_dir / "base"
    tensors = _adapter(tmp_path / "lora", base)
    assert is_adapter(tmp_path / "lora") and not is_adapter(base)
    with AdapterSource(tmp_path / "lora", base) as source, TensorSource(base) as plain:
        assert source.config.scale == 2.0
        assert sorted(source.keys()) == sorted(plain.keys())
        a = tensors[f"base_model.model.{QUERY}.lora_A.weight"]
        b = tensors[f"base_model.model.{QUERY}.lora_B.weight"]
        expected = plain.get(f"{QUERY}.weight") + 2.0 * b @ a
        assert torch.allclose(source.get(f"{QUERY}.weight"), expected, atol=1e-6)
        assert torch.allclose(source.get_rows(f"{QUERY}.weight", 3, 7), expected[3:7], atol=1e-6)
        assert torch.equal(source.get("classifier.out_proj.weight"), plain.get("classifier.out_proj.weight") + 1.0)
        assert torch.equal(source.get(f"{QUERY}.bias"), plain.get(f"{QUERY}.bias"))


def test_rslora_scales_by_the_square_root_of_the_rank(zoo_dir, tmp_path):
    _adapter(tmp_path / "lora", zoo_dir / "base", rank=4, alpha=4.0, use_rslora=True)
    assert LoraConfig.read(tmp_path / "lora").scale == 2.0


@pytest.mark.parametrize("config, message", [
    ({"peft_type": "IA3"}, "peft_type 'IA3' is not supported; only LORA adapters are"),
    ({"use_dora": True}, "use_dora adapters are not supported"),
    ({"r": 0}, "r must be a whole number >= 1, not 0"),
    ({"lora_bias": True}, "lora_bias adapters are not supported"),
])
def test_unsupported_adapters_are_refused_in_one_line(zoo_dir, tmp_path, config, message):
    _adapter(tmp_path / "lora", zoo_dir / "base", **config)
    with pytest.raises(ModelError, match=message):
        AdapterSource(tmp_path / "lora", zoo_dir / "base")


@pytest.mark.parametrize("key, message", [
    ("roberta.embeddings.word_embeddings.lora_embedding_A", "LoRA on embeddings"),
    (f"{QUERY}.lora_B.bias", "a LoRA bias \\(lora_bias\\)"),
])
def test_adapter_tensors_it_cannot_merge_are_refused(zoo_dir, tmp_path, key, message):
    tensors = _adapter(tmp_path / "lora", zoo_dir / "base")
    tensors[f"base_model.model.{key}"] = torch.zeros(2, 3)
    save_file(tensors, str(tmp_path / "lora" / "adapter_model.safetensors"))
    with pytest.raises(ModelError, match=f"{message} is not supported: base_model.model.{key}$"):
        AdapterSource(tmp_path / "lora", zoo_dir / "base")


def test_a_bf16_base_keeps_the_update_exact_for_the_merge(zoo_dir, tmp_path):
    """The adapted rows are served in float32: rounding W + ΔW to bf16 would swamp ΔW."""
    from transformers import AutoModelForSequenceClassification

    base = tmp_path / "base16"
    AutoModelForSequenceClassification.from_pretrained(zoo_dir / "base", dtype=torch.bfloat16).save_pretrained(base)
    tensors = _adapter(tmp_path / "lora", base)
    a, b = (tensors[f"base_model.model.{QUERY}.lora_{x}.weight"] for x in "AB")
    with AdapterSource(tmp_path / "lora", base) as source, TensorSource(base) as plain:
        merged = source.get(f"{QUERY}.weight")
        assert merged.dtype == torch.float32
        delta = merged - plain.get(f"{QUERY}.weight").float()
    assert torch.allclose(delta, 2.0 * b @ a, atol=1e-5)


def test_a_merge_never_writes_into_the_adapters_base(zoo_dir, tmp_path, registry):
    """The base an adapter names is an input of the merge even when the strategy reads no base."""
    import shutil

    from merginguriel_core.errors import ConfigError
    from merginguriel_core.merge import SourceModel
    from merginguriel_core.plan import plan_merge

    base = tmp_path / "base"
    shutil.copytree(zoo_dir / "base", base)
    before = sorted(p.name for p in base.iterdir())
    _second(tmp_path / "de", base, 1)
    _second(tmp_path / "nl", base, 2)
    sources = [SourceModel("de-DE", tmp_path / "de", 0.5), SourceModel("nl-NL", tmp_path / "nl", 0.5)]
    for output in (base, base / "inside"):
        with pytest.raises(ConfigError, match=f"would overwrite, hold or sit inside the input {base}"):
            plan_merge(output, sources=sources, registry=registry, progress=False, overwrite=True,
                       output_format="adapter")
    assert sorted(p.name for p in base.iterdir()) == before


def test_the_whole_model_equals_peft_merge_and_unload(zoo_dir, tmp_path):
    peft = pytest.importorskip("peft", reason="peft is not installed (pip install -e '.[adapters]')")
    from transformers import AutoModelForSequenceClassification

    base = zoo_dir / "base"
    model = AutoModelForSequenceClassification.from_pretrained(base)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4,
                                                         target_modules=["query", "value"]))
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    wrapped.save_pretrained(tmp_path / "lora")
    merged = wrapped.merge_and_unload().state_dict()
    with AdapterSource(tmp_path / "lora", base) as source:
        for name in source.keys():
            assert torch.allclose(source.get(name).float(), merged[name].float(), atol=1e-6), name


def _second(folder: Path, base: Path, seed: int, **config) -> None:
    _adapter(folder, base, **config)
    path = folder / "adapter_model.safetensors"
    with TensorSource(folder) as source:
        tensors = {name: source.get(name) for name in source.keys()}
    generator = torch.Generator().manual_seed(seed)
    save_file({name: t + torch.randn(t.shape, generator=generator) * 0.1 for name, t in tensors.items()}, str(path))


def test_a_merge_of_adapter_folders_is_the_merge_of_the_models_they_make(zoo_dir, tmp_path, registry):
    from transformers import AutoModelForSequenceClassification

    from merginguriel_core.merge import SourceModel, merge_state_dict, run_merge
    from merginguriel_core.plan import plan_merge

    base = zoo_dir / "base"
    _second(tmp_path / "de", base, 1)
    _second(tmp_path / "nl", base, 2)
    sources = [SourceModel("de-DE", tmp_path / "de", 0.75), SourceModel("nl-NL", tmp_path / "nl", 0.25)]
    merged = merge_state_dict(plan_merge(None, sources=sources, registry=registry, progress=False))
    with AdapterSource(tmp_path / "de", base) as de, AdapterSource(tmp_path / "nl", base) as nl:
        for name in de.keys():
            expected = 0.75 * de.get(name).float() + 0.25 * nl.get(name).float()
            assert torch.allclose(merged[name].float(), expected, atol=1e-6), name
    run_merge(plan_merge(tmp_path / "out", sources=sources, registry=registry, progress=False))
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert torch.allclose(model.state_dict()[f"{QUERY}.weight"], merged[f"{QUERY}.weight"])


def test_adapter_sources_must_adapt_the_same_modules(zoo_dir, tmp_path, registry):
    from merginguriel_core.merge import SourceModel, merge_state_dict
    from merginguriel_core.plan import plan_merge

    base = zoo_dir / "base"
    _second(tmp_path / "de", base, 1)
    _second(tmp_path / "nl", base, 2)
    config = json.loads((tmp_path / "nl" / "adapter_config.json").read_text())
    with TensorSource(tmp_path / "nl") as source:
        tensors = {name.replace(".query.", ".key."): source.get(name) for name in source.keys()}
    save_file(tensors, str(tmp_path / "nl" / "adapter_model.safetensors"))
    (tmp_path / "nl" / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["key"]}))
    plan = plan_merge(None, sources=[SourceModel("de-DE", tmp_path / "de", 0.5), SourceModel("nl-NL", tmp_path / "nl", 0.5)],
                      registry=registry, progress=False)
    with pytest.raises(ModelError, match="adapter sources adapt different modules: "
                                         "roberta.encoder.layer.0.attention.self.key.weight is adapted in nl-NL only"):
        merge_state_dict(plan)


def test_train_adapters_then_merge_and_evaluate_them(runner, zoo_dir, sib_dir, tmp_path):
    pytest.importorskip("peft", reason="peft is not installed (pip install -e '.[adapters]')")
    from conftest import run_cli
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    trained = run_cli(runner, "train", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, "--locales",
                      "de-DE,nl-NL", "--output-dir", tmp_path / "adapters", "--adapter", "lora", "--lora-rank", "4",
                      "--epochs", "2", "--max-length", "16", "--no-progress")
    assert trained.exit_code == 0, trained.output
    folder = tmp_path / "adapters" / "xlm-roberta-base_massive_k_de-DE"
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    details = json.loads((folder / "training_details.json").read_text())
    assert details["adapter"]["rank"] == 4 and 0 < details["adapter"]["trainable_parameters"] < 4830
    loaded = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(zoo_dir / "base"), str(folder))
    assert loaded.peft_config["default"].r == 4
    merged = run_cli(runner, "merge", "--target-lang", "af-ZA", "--weighting", "average", "--models",
                     tmp_path / "adapters", "--output", tmp_path / "merged", "--no-progress")
    assert merged.exit_code == 0, merged.output
    for model in (tmp_path / "merged", folder):  # a merged whole model, and an adapter folder itself
        scored = run_cli(runner, "evaluate", "--model", model, "--data-dir", sib_dir, "--locale", "af-ZA",
                         "--max-length", "16", "--no-cache")
        assert scored.exit_code == 0, scored.output
        assert 0.0 <= json.loads(scored.output[scored.output.index("{"):])["accuracy"] <= 1.0


def test_lora_options_go_with_an_adapter(runner, zoo_dir, sib_dir, tmp_path):
    from conftest import run_cli

    result = run_cli(runner, "train", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, "--locale", "de-DE",
                     "--output", tmp_path / "m", "--lora-rank", "4")
    assert result.exit_code == 1 and "--lora-rank goes with --adapter lora" in result.output
    result = run_cli(runner, "train", "--base-model", zoo_dir / "base", "--data-dir", sib_dir, "--locale", "de-DE",
                     "--output", tmp_path / "m", "--adapter", "ia3")
    assert result.exit_code == 1 and "unknown --adapter 'ia3'; allowed: lora" in result.output
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ merged adapters (--output-format adapter)
def _peft_adapters(base: Path, folder: Path, names=("de", "nl"), rank: int = 2) -> list[Path]:
    """Trained-looking peft LoRA folders on ``base`` (query and value adapted, random B),
    without a wholly trained head: peft's add_weighted_adapter refuses to combine those."""
    peft = pytest.importorskip("peft", reason="peft is not installed (pip install -e '.[adapters]')")
    from transformers import AutoModelForSequenceClassification

    folders = []
    for index, name in enumerate(names):
        torch.manual_seed(index)
        model = AutoModelForSequenceClassification.from_pretrained(base)
        wrapped = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=2 * rank,
                                                             target_modules=["query", "value"]))
        with torch.no_grad():
            for parameter_name, parameter in wrapped.named_parameters():
                if "lora_" in parameter_name:
                    parameter.copy_(torch.randn_like(parameter) * 0.5)
        wrapped.save_pretrained(folder / name)
        (folder / name / "adapter_config.json").write_text(json.dumps(
            {**json.loads((folder / name / "adapter_config.json").read_text()), "base_model_name_or_path": str(base)}))
        folders.append(folder / name)
    return folders


def test_switching_adapters_takes_each_ones_tokenizer(zoo_dir, tmp_path):
    """An adapter with its own tokenizer, then one without: the second gets the base's."""
    import shutil

    from merginguriel_core.statistics import adapter_classifier

    base = zoo_dir / "base"
    own, plain = _peft_adapters(base, tmp_path / "adapters")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, own / name)
    model, tokenizer = adapter_classifier(own, torch.device("cpu"))
    assert Path(tokenizer.name_or_path) == own
    switched, tokenizer = adapter_classifier(plain, torch.device("cpu"), loaded=model)
    assert switched is model and Path(tokenizer.name_or_path).resolve() == base.resolve()
    again, tokenizer = adapter_classifier(own, torch.device("cpu"), loaded=model)
    assert again is model and Path(tokenizer.name_or_path) == own


def _peft_combination(base: Path, folders: list[Path], weights: list[float], combination: str, **options):
    """The whole model of peft's add_weighted_adapter over ``folders`` (merge_and_unload)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), str(folders[0]),
                                      adapter_name="a0")
    for index, folder in enumerate(folders[1:], 1):
        model.load_adapter(str(folder), adapter_name=f"a{index}")
    model.add_weighted_adapter([f"a{i}" for i in range(len(folders))], weights, "merged",
                               combination_type=combination, **options)
    model.set_adapter("merged")
    return model.merge_and_unload().state_dict()


def _applied(base: Path, folder: Path) -> dict[str, torch.Tensor]:
    """The whole model peft makes of the merged adapter in ``folder``."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), str(folder))
    return model.merge_and_unload().state_dict()


def _merge_adapter(folders, weights, output, registry, strategy="linear", **options):
    from merginguriel_core.merge import SourceModel, run_merge
    from merginguriel_core.plan import plan_merge

    sources = [SourceModel(f"l{i}-XX", folder, w) for i, (folder, w) in enumerate(zip(folders, weights))]
    return run_merge(plan_merge(output, sources=sources, strategy=strategy, registry=registry, progress=False,
                                output_format="adapter", **options))


def _assert_same_models(first: dict, second: dict, atol: float = 1e-5) -> None:
    assert sorted(first) == sorted(second)
    for name in first:
        assert torch.allclose(first[name].float(), second[name].float(), atol=atol), name


def test_a_linear_merged_adapter_is_the_exact_concatenation_peft_cat_makes(zoo_dir, tmp_path, registry):
    from merginguriel_core.merge import SourceModel, merge_state_dict
    from merginguriel_core.plan import plan_merge

    base = zoo_dir / "base"
    folders = _peft_adapters(base, tmp_path)
    summary = _merge_adapter(folders, [0.7, 0.3], tmp_path / "merged", registry)
    config = json.loads((tmp_path / "merged" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (4, 4)  # 2 + 2, scale 1
    assert summary.details["output"] == {"format": "adapter", "sources": 2, "rank": 4, "alpha": 4.0,
                                         "method": "concatenation", "source_ranks": [2, 2],
                                         "energy_kept_min": 1.0, "energy_kept_mean": 1.0}
    assert not (tmp_path / "merged" / "model.safetensors").exists()
    applied = _applied(base, tmp_path / "merged")
    _assert_same_models(applied, _peft_combination(base, folders, [0.7, 0.3], "cat"))
    # ... and the whole model of the same merge (--output-format model) is the same model
    whole = merge_state_dict(plan_merge(None, sources=[SourceModel("l0-XX", folders[0], 0.7),
                                                       SourceModel("l1-XX", folders[1], 0.3)],
                                        registry=registry, progress=False))
    _assert_same_models({k: v for k, v in applied.items() if k in whole}, whole)


def test_a_ties_merged_adapter_equals_peft_ties_svd(zoo_dir, tmp_path, registry):
    base = zoo_dir / "base"
    folders = _peft_adapters(base, tmp_path, names=("de", "nl", "fr"))
    # peft divides the disjoint sum by the number of agreeing adapters, TIES (and this tool) by
    # their weight: the two agree for equal weights, which peft takes unnormalised.
    summary = _merge_adapter(folders, [1, 1, 1], tmp_path / "merged", registry, strategy="ties",
                             params={"density": 0.5}, adapter_rank=3)
    assert summary.details["output"]["rank"] == 3 and summary.details["output"]["method"] == "truncated_svd"
    assert 0.5 < summary.details["output"]["energy_kept_min"] < 1.0
    assert summary.details["base_model"] == str(base)  # the adapters' base, for the task vectors
    theirs = _peft_combination(base, folders, [1.0, 1.0, 1.0], "ties_svd", density=0.5, svd_rank=3)
    _assert_same_models(_applied(base, tmp_path / "merged"), theirs)
    # in memory (an experiment's merge cell): the model the merged adapter makes, not written
    from merginguriel_core.merge import SourceModel, merge_state_dict
    from merginguriel_core.plan import plan_merge

    in_memory = merge_state_dict(plan_merge(
        None, sources=[SourceModel(f"l{i}-XX", f, 1) for i, f in enumerate(folders)], strategy="ties",
        params={"density": 0.5}, registry=registry, progress=False, output_format="adapter", adapter_rank=3))
    _assert_same_models(in_memory, theirs)


def test_a_dare_linear_merged_adapter_equals_peft_dare_linear_svd_in_expectation(zoo_dir, tmp_path, registry):
    """DARE's masks are random in both (different generators): averaged over draws, the two
    merged updates converge to the same Σ wₖ ΔWₖ; one draw of each differs from it."""
    base = zoo_dir / "base"
    folders = _peft_adapters(base, tmp_path)
    name = "roberta.encoder.layer.0.attention.self.value.weight"
    with TensorSource(base) as plain:
        base_weight = plain.get(name)
    with AdapterSource(folders[0], base) as de, AdapterSource(folders[1], base) as nl:
        expected = 0.5 * de.delta_rows(name, 0, 16) + 0.5 * nl.delta_rows(name, 0, 16)
    draws = 40
    ours, theirs = torch.zeros_like(expected), torch.zeros_like(expected)
    for seed in range(draws):
        _merge_adapter(folders, [0.5, 0.5], tmp_path / f"ours{seed}", registry, strategy="dare_linear",
                       params={"density": 0.5}, adapter_rank=16, seed=seed)
        ours += _applied(base, tmp_path / f"ours{seed}")[name] - base_weight
        torch.manual_seed(seed)
        theirs += _peft_combination(base, folders, [0.5, 0.5], "dare_linear_svd", density=0.5, svd_rank=16)[name] - base_weight
    ours, theirs = ours / draws, theirs / draws
    scale = float(expected.abs().mean())
    assert float((ours - expected).abs().mean()) < 0.25 * scale
    assert float((theirs - expected).abs().mean()) < 0.25 * scale
    single = _applied(base, tmp_path / "ours0")[name] - base_weight
    assert float((single - expected).abs().mean()) > 2 * float((ours - expected).abs().mean())


def test_merge_cli_writes_an_adapter_peft_loads_and_states_its_rank(runner, zoo_dir, tmp_path):
    from conftest import run_cli

    base = zoo_dir / "base"
    folders = _peft_adapters(base, tmp_path / "adapters")
    for folder, locale in zip(folders, ("de-DE", "nl-NL")):
        folder.rename(tmp_path / "adapters" / f"xlm-roberta-base_massive_k_{locale}")
    args = ("merge", "--target-lang", "af-ZA", "--weighting", "average", "--models", tmp_path / "adapters",
            "--no-progress", "--output-format", "adapter")
    result = run_cli(runner, *args, "--output", tmp_path / "cat")
    assert result.exit_code == 0, result.output
    assert "Merged adapter of rank 4: the exact concatenation of 2 adapters (ranks 2+2)." in result.output
    result = run_cli(runner, *args, "--adapter-rank", "2", "--strategy", "ties", "--output", tmp_path / "svd")
    assert result.exit_code == 0, result.output
    assert "Merged adapter of rank 2: truncated SVD of the merged update, keeping" in result.output
    assert json.loads((tmp_path / "svd" / "adapter_config.json").read_text())["r"] == 2
    assert not (tmp_path / "svd" / "README.md").exists()
    with TensorSource(tmp_path / "svd") as merged:
        a = [n for n in merged.keys() if ".lora_A." in n]
        assert len(a) == 2 and all(merged.info(n).shape == (2, 16) for n in a)
    _applied(base, tmp_path / "svd")  # peft loads it


@pytest.mark.parametrize("extra, message", [
    (("--output-format", "lora"), "unknown --output-format 'lora'; allowed: model, adapter"),
    (("--adapter-rank", "4"), "--adapter-rank goes with --output-format adapter"),
    (("--output-format", "adapter", "--adapter-rank", "0"), "--adapter-rank must be a whole number >= 1, not 0"),
    (("--output-format", "adapter"), "--output-format adapter needs adapter sources; nl-NL"),
])
def test_output_format_mistakes_are_one_line_errors(runner, zoo_dir, tmp_path, extra, message):
    from conftest import run_cli

    result = run_cli(runner, "merge", "--target-lang", "af-ZA", "--weighting", "average", "--models", zoo_dir,
                     "--output", tmp_path / "out", "--no-progress", *extra)
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ ensembles and the N×N matrix
def test_ensembles_over_adapters_read_the_base_once_and_switch_adapters(runner, zoo_dir, sib_dir, tmp_path):
    import numpy as np

    from conftest import installed_registry, run_cli
    from merginguriel_core.evaluation import LogitsCache, Predictor
    from merginguriel_core.statistics import load_classifier
    from merginguriel_core.training import predict_logits

    base = zoo_dir / "base"
    models = tmp_path / "adapters"
    for folder, locale in zip(_peft_adapters(base, models, names=("de", "nl", "sw")), ("de-DE", "nl-NL", "sw-KE")):
        folder.rename(models / f"xlm-roberta-base_massive_k_{locale}")
    data = installed_registry().get("dataset", "sib200")
    examples, labels = data.load(str(sib_dir), "af-ZA", "test"), data.labels(str(sib_dir))
    predictor = Predictor(LogitsCache(None), torch.device("cpu"), max_length=16)
    for folder in sorted(models.iterdir()):
        switched = predictor.logits(folder, examples, labels)
        merged, tokenizer = load_classifier(folder, torch.device("cpu"))  # base + adapter, merged by peft
        expected = predict_logits(merged, tokenizer, examples.texts, 64, 16, torch.device("cpu"))
        assert np.allclose(switched, expected, atol=1e-5), folder.name
    assert predictor.base_loads == 1 and predictor.forward_passes == 3
    assert len(predictor._loaded[1].peft_config) == 1  # the earlier adapters were dropped

    result = run_cli(runner, "ensemble", "--target-lang", "af-ZA", "--models", models, "--data-dir", sib_dir,
                     "--no-cache", "--no-progress", "--voting-method", "soft", "--weighting", "average", "--max-length", "16")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert {"de-DE", "nl-NL"} <= {s["locale"] for s in report["sources"]} and 0 <= report["accuracy"] <= 1
    matrix = run_cli(runner, "nxn", "--models", models, "--data-dir", sib_dir, "--output", tmp_path / "nxn",
                     "--no-cache", "--no-progress", "--max-length", "16")
    assert matrix.exit_code == 0, matrix.output
    frame = __import__("pandas").read_csv(next((tmp_path / "nxn").glob("*.csv")), index_col=0)
    assert frame.shape[0] == 3 and frame.notna().all().all()


def _encoder_without_pooler(zoo_dir: Path, encoder: Path) -> Path:
    """A tiny BERT (whose classifier reads the pooler) saved without its pooler, as multilingual-e5."""
    from transformers import AutoConfig, AutoTokenizer, BertConfig, BertModel

    vocab = AutoConfig.from_pretrained(zoo_dir / "base").vocab_size
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=40, pad_token_id=1),
              add_pooling_layer=False).save_pretrained(encoder)
    AutoTokenizer.from_pretrained(zoo_dir / "base").save_pretrained(encoder)
    with TensorSource(encoder) as plain:
        assert not [name for name in plain.keys() if "pooler" in name]
    return encoder


def test_a_fresh_module_that_is_also_a_lora_target_is_saved_whole(runner, zoo_dir, sib_dir, tmp_path):
    """Targeting ``dense`` also matches the pooler the base lacks: it is still trained and saved
    whole, so the adapter reads back over its base, the same model at every load."""
    pytest.importorskip("peft", reason="peft is not installed (pip install -e '.[adapters]')")
    from conftest import run_cli
    from merginguriel_core.statistics import load_classifier

    encoder = _encoder_without_pooler(zoo_dir, tmp_path / "encoder")
    result = run_cli(runner, "train", "--base-model", encoder, "--data-dir", sib_dir, "--locale", "de-DE",
                     "--output", tmp_path / "de", "--adapter", "lora", "--lora-rank", "2", "--lora-targets",
                     "query,value,dense", "--epochs", "1", "--max-length", "16", "--no-progress")
    assert result.exit_code == 0, result.output
    with TensorSource(tmp_path / "de") as adapter:
        saved = [name for name in adapter.keys() if "pooler.dense" in name]
    assert sorted(saved) == ["base_model.model.bert.pooler.dense.bias", "base_model.model.bert.pooler.dense.weight"]
    with AdapterSource(tmp_path / "de", encoder) as source:
        assert "bert.pooler.dense.weight" in source.whole
    first, second = (load_classifier(tmp_path / "de", torch.device("cpu"))[0].state_dict() for _ in range(2))
    assert torch.equal(first["bert.pooler.dense.weight"], second["bert.pooler.dense.weight"])


def test_an_adapter_on_an_encoder_only_base_keeps_the_modules_the_base_lacks(runner, zoo_dir, sib_dir, tmp_path):
    """An encoder checkpoint without a pooler (multilingual-e5) gets a freshly initialised one
    in the classifier: the adapter must save it (trained with the head), or every later load
    draws another random pooler and the adapter scores at chance."""
    pytest.importorskip("peft", reason="peft is not installed (pip install -e '.[adapters]')")
    import numpy as np

    from conftest import run_cli
    from merginguriel_core.plugins import get_registry
    from merginguriel_core.statistics import load_classifier
    from merginguriel_core.training import predict_logits

    encoder = _encoder_without_pooler(zoo_dir, tmp_path / "encoder")
    for locale in ("de-DE", "nl-NL"):
        result = run_cli(runner, "train", "--base-model", encoder, "--data-dir", sib_dir, "--locale", locale,
                         "--output", tmp_path / locale[:2], "--adapter", "lora", "--lora-rank", "2", "--epochs", "3",
                         "--learning-rate", "5e-3", "--max-length", "16", "--no-progress")
        assert result.exit_code == 0, result.output
    assert not (tmp_path / "de" / "tokenizer.json").exists()  # the base's tokenizer serves
    with TensorSource(tmp_path / "de") as adapter:
        saved = " ".join(adapter.keys())
    assert "pooler.dense" in saved and "classifier" in saved
    details = json.loads((tmp_path / "de" / "training_details.json").read_text())
    dev = get_registry().get("dataset", "sib200").load(str(sib_dir), "de-DE", "dev")
    labels = details["labels"]
    gold = np.array([labels.index(label) for label in dev.labels])
    accuracies = []
    for _ in range(2):  # two loads: the same model, the one that was trained
        model, tokenizer = load_classifier(tmp_path / "de", torch.device("cpu"))
        logits = predict_logits(model, tokenizer, dev.texts, 64, 16, torch.device("cpu"))
        accuracies.append(float(np.mean(logits.argmax(-1) == gold)))
    assert accuracies[0] == accuracies[1] == pytest.approx(details["dev_accuracy"])
    # switched on one base (pooler and head are per adapter), the same logits as each loaded alone
    from merginguriel_core.evaluation import LogitsCache, Predictor

    predictor = Predictor(LogitsCache(None), torch.device("cpu"), max_length=16)
    for folder in (tmp_path / "de", tmp_path / "nl", tmp_path / "de"):
        model, tokenizer = load_classifier(folder, torch.device("cpu"))
        alone = predict_logits(model, tokenizer, dev.texts, 64, 16, torch.device("cpu"))
        assert np.allclose(predictor.logits(folder, dev, labels), alone, atol=1e-5), folder.name
    assert predictor.base_loads == 1


def test_a_spec_checks_a_merge_entry_output_format_and_rank(tmp_path, trained, zoo_dir, sib_dir, registry):
    from test_experiments import write_spec

    from merginguriel_core.errors import ConfigError
    from merginguriel_core.experiments.spec import load_spec

    path = write_spec(tmp_path, trained, zoo_dir, sib_dir, strategies=[
        {"strategy": "linear", "output_format": "lora"},
        {"strategy": "ties", "label": "t1", "adapter_rank": 4},
        {"strategy": "ties", "label": "t2", "output_format": "adapter", "adapter_rank": 0},
        {"strategy": "ties", "label": "t3", "output_format": "adapter", "adapter_rank": 8}])
    with pytest.raises(ConfigError) as error:
        load_spec(path, registry)
    problems = sorted(line.strip().removeprefix("- ") for line in str(error.value).splitlines()[1:])
    assert problems == ["strategies[0].output_format: 'lora' is not one of: model, adapter",
                        "strategies[1].adapter_rank: goes with output_format: adapter",
                        "strategies[2].adapter_rank: must be a whole number >= 1, not 0"]
    path = write_spec(tmp_path, trained, zoo_dir, sib_dir, strategies=[
        {"strategy": "ties", "label": "t3", "output_format": "adapter", "adapter_rank": 8}])
    spec = load_spec(path, registry)
    assert [dict(m.options) for m in spec.methods if m.kind == "merge"] == [{"output_format": "adapter", "adapter_rank": 8}]


def test_an_experiment_over_adapter_folders_runs_every_kind_of_cell(runner, zoo_dir, sib_dir, tmp_path, registry):
    import yaml

    from merginguriel_core.experiments.results import iter_cells
    from merginguriel_core.experiments.runner import run_experiment

    base = zoo_dir / "base"
    models = tmp_path / "adapters"
    for folder, locale in zip(_peft_adapters(base, models, names=("de", "nl", "sw")), ("de-DE", "nl-NL", "sw-KE")):
        folder.rename(models / f"lora_{locale}")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "lora", "models": {"folder": str(models), "pattern": "lora_{locale}", "base": str(base)},
        "data": {"dataset": "sib200", "data_dir": str(sib_dir), "split": "test", "max_length": 16, "batch_size": 8},
        "targets": ["af-ZA"], "selections": ["average"],
        "strategies": ["linear", {"strategy": "ties", "label": "ties+adapter2", "output_format": "adapter",
                                  "adapter_rank": 2, "params": {"density": 0.5}}],
        "voting": ["soft"], "baselines": "all"}))
    run_experiment(spec, tmp_path / "results", registry=registry, progress=False)
    records = {r["cell"]: r for _, r, _ in iter_cells(tmp_path / "results") if r is not None}
    done = {key for key, r in records.items() if r["status"] == "done"}
    assert {key for key in records if records[key]["status"] == "skipped"} == {  # no English nor af-ZA adapter
        "af-ZA/baseline-english", "af-ZA/baseline-own"}
    assert {"af-ZA/merge-linear@average", "af-ZA/merge-ties+adapter2@average", "af-ZA/vote-soft@average",
            "af-ZA/baseline-closest", "af-ZA/nxn-de-DE"} <= done
    assert all(0 <= records[key]["metrics"]["accuracy"] <= 1 for key in done)
