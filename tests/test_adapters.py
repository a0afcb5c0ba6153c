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
])
def test_unsupported_adapters_are_refused_in_one_line(zoo_dir, tmp_path, config, message):
    _adapter(tmp_path / "lora", zoo_dir / "base", **config)
    with pytest.raises(ModelError, match=message):
        AdapterSource(tmp_path / "lora", zoo_dir / "base")


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
