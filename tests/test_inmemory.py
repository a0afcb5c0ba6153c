"""Merging into memory (merge_state_dict), the agreement shortcut, and evaluating a merged
classifier from memory (merginguriel_core.inmemory) against the model run_merge writes."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merginguriel_core.errors import ConfigError, ModelError, TensorFileError
from merginguriel_core.inmemory import merge_and_evaluate, model_from_state_dict
from merginguriel_core.io import TensorSource
from merginguriel_core.merge import SourceModel, merge_state_dict, run_merge
from merginguriel_core.plan import evaluate, plan_merge
from merginguriel_core.zoo import build_zoo
from merginguriel_plugins.linear import LinearStrategy

PATTERN = "xlm-roberta-base_massive_k_{locale}"
FROZEN = "roberta.embeddings.word_embeddings.weight"
#: Strategies whose arithmetic on agreed inputs is exact at weights 0.5/0.5: the shortcut
#: changes no byte. (fisher_simple's (F+ε)θ/(F+ε) may round θ by an ulp.)
EXACT = ["linear", "task_arithmetic", "ties", "dare", "della", "breadcrumbs_ties", "model_stock", "slerp", "karcher"]


def _sources(zoo: Path, weights: dict[str, float]) -> list[SourceModel]:
    return [SourceModel(locale, zoo / PATTERN.format(locale=locale), weight) for locale, weight in weights.items()]


def _plan(registry, output, zoo: Path, strategy: str, weights: dict[str, float], base: Path | None = None,
          **options):
    needs_base = registry.get("strategy", strategy).needs_base
    return plan_merge(output, strategy=strategy, sources=_sources(zoo, weights), progress=False, registry=registry,
                      base_model=(base or zoo / "base") if needs_base else None, **options)


def _raw(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


def _same_bytes(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], skip: str | None = None) -> None:
    assert list(first) == list(second)
    for name in first:
        if name != skip:
            assert first[name].dtype == second[name].dtype and first[name].shape == second[name].shape, name
            assert torch.equal(_raw(first[name]), _raw(second[name])), name


def _written(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a written model, in file order."""
    state = load_file(folder / "model.safetensors")
    return {name: state[name] for name in TensorSource(folder).keys()}


def _rewrite(folder: Path, **tensors: torch.Tensor) -> None:
    state = load_file(folder / "model.safetensors")
    state.update(tensors)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture
def frozen_zoo(tmp_path) -> Path:
    """A zoo of de-DE and nl-NL whose word embeddings equal the base's (frozen in fine-tuning)."""
    zoo = tmp_path / "frozen"
    build_zoo(zoo, ["de-DE", "nl-NL"])
    embeddings = load_file(zoo / "base" / "model.safetensors")[FROZEN]
    for locale in ("de-DE", "nl-NL"):
        _rewrite(zoo / PATTERN.format(locale=locale), **{FROZEN: embeddings.clone()})
    return zoo


# ------------------------------------------------------------------ merge_state_dict
@pytest.mark.parametrize("strategy, options", [
    ("linear", {}), ("linear", {"dtype": "float16", "chunk_size": "1KB"}), ("task_arithmetic", {}),
    ("ties", {"params": {"density": 0.5}}), ("ties", {"chunk_size": "1KB"}), ("dare", {"seed": 3}),
    ("della", {"chunk_size": "1KB"}), ("breadcrumbs", {}), ("model_stock", {}), ("karcher", {}),
    ("fisher_simple", {}), ("slerp", {}),
])
def test_merge_state_dict_is_bit_identical_to_run_merge(registry, zoo_dir, tmp_path, strategy, options):
    weights = {"de-DE": 0.5, "nl-NL": 0.3, "af-ZA": 0.2} if strategy != "slerp" else {"de-DE": 0.6, "nl-NL": 0.4}
    run_merge(_plan(registry, tmp_path / "out", zoo_dir, strategy, weights, **options))
    details: dict = {}
    state = merge_state_dict(_plan(registry, None, zoo_dir, strategy, weights, **options), details=details)
    _same_bytes(state, _written(tmp_path / "out"))
    assert all(tensor.device.type == "cpu" for tensor in state.values())
    assert details["tensors"] == len(state) and details["strategy"] == strategy and details["agreed_tensors"] == 0


def test_a_plan_without_output_merges_in_memory_only(registry, zoo_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = _plan(registry, None, zoo_dir, "linear", {"de-DE": 1, "nl-NL": 1})
    with pytest.raises(ConfigError, match="this merge plan has no output folder"):
        run_merge(plan)
    state = merge_state_dict(plan)
    assert len(state) == 25 and list(tmp_path.iterdir()) == []


def test_keep_writes_what_run_merge_writes(registry, zoo_dir, tmp_path):
    weights = {"de-DE": 0.7, "nl-NL": 0.3}
    run_merge(_plan(registry, tmp_path / "out", zoo_dir, "ties", weights))
    plan = _plan(registry, None, zoo_dir, "ties", weights)
    state = merge_state_dict(plan, keep=tmp_path / "kept")
    assert (tmp_path / "kept" / "model.safetensors").read_bytes() == (tmp_path / "out" / "model.safetensors").read_bytes()
    _same_bytes(state, _written(tmp_path / "kept"))
    assert {"config.json", "tokenizer.json", "merge_details.json"} <= {p.name for p in (tmp_path / "kept").iterdir()}
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        merge_state_dict(plan, keep=tmp_path / "kept")


# ------------------------------------------------------------- the agreement shortcut
def test_builtin_strategies_keep_agreement_except_regmean(registry):
    kept = {name: registry.get("strategy", name).keeps_agreement for name in registry.names("strategy")}
    assert {name for name, keeps in kept.items() if not keeps} == {"regmean"}
    from merginguriel_core.interfaces import MergeStrategy

    assert MergeStrategy.keeps_agreement is False  # a third-party strategy is short-cut only if it says so


@pytest.mark.parametrize("strategy", [*EXACT, "fisher_simple"])
def test_an_agreed_tensor_is_copied_and_counted(registry, frozen_zoo, tmp_path, strategy):
    weights = {"de-DE": 0.5, "nl-NL": 0.5}
    plan = _plan(registry, tmp_path / "on", frozen_zoo, strategy, weights)
    on = run_merge(plan).details
    off = run_merge(dataclasses.replace(plan, output=tmp_path / "off", agreement_shortcut=False)).details
    nbytes = 55 * 16 * 4
    assert (on["agreement_shortcut"], on["agreed_tensors"], on["agreed_bytes"]) == (True, 1, nbytes)
    assert (off["agreement_shortcut"], off["agreed_tensors"], off["agreed_bytes"]) == (False, 0, 0)
    merged, unshortened = _written(tmp_path / "on"), _written(tmp_path / "off")
    frozen = load_file(frozen_zoo / "base" / "model.safetensors")[FROZEN]
    assert torch.equal(_raw(merged[FROZEN]), _raw(frozen))  # the tensor itself
    _same_bytes(merged, unshortened, skip=None if strategy in EXACT else FROZEN)
    torch.testing.assert_close(unshortened[FROZEN], frozen, rtol=1e-6, atol=0)
    _same_bytes(merge_state_dict(dataclasses.replace(plan, output=None)), merged)


def test_unequal_weights_give_the_tensor_exactly_and_the_merge_within_rounding(registry, frozen_zoo, tmp_path):
    plan = _plan(registry, tmp_path / "on", frozen_zoo, "linear", {"de-DE": 0.7, "nl-NL": 0.3})
    run_merge(plan)
    run_merge(dataclasses.replace(plan, output=tmp_path / "off", agreement_shortcut=False))
    frozen = load_file(frozen_zoo / "base" / "model.safetensors")[FROZEN]
    merged, unshortened = _written(tmp_path / "on"), _written(tmp_path / "off")
    assert torch.equal(_raw(merged[FROZEN]), _raw(frozen))
    torch.testing.assert_close(unshortened[FROZEN], frozen, rtol=1e-6, atol=0)
    _same_bytes(merged, unshortened, skip=FROZEN)


def test_sources_that_agree_with_each_other_but_not_the_base(registry, tmp_path):
    """A base-reading strategy merges the tensor (its task vectors are not zero); linear,
    which reads no base, copies it."""
    zoo = tmp_path / "zoo"
    build_zoo(zoo, ["de-DE", "nl-NL"])
    shared = load_file(zoo / PATTERN.format(locale="de-DE") / "model.safetensors")[FROZEN]
    _rewrite(zoo / PATTERN.format(locale="nl-NL"), **{FROZEN: shared.clone()})
    weights = {"de-DE": 0.5, "nl-NL": 0.5}
    ties = run_merge(_plan(registry, tmp_path / "ties", zoo, "ties", weights, params={"density": 0.5})).details
    linear = run_merge(_plan(registry, tmp_path / "linear", zoo, "linear", weights)).details
    assert ties["agreed_tensors"] == 0 and linear["agreed_tensors"] == 1
    assert not torch.equal(_written(tmp_path / "ties")[FROZEN], shared)
    assert torch.equal(_raw(_written(tmp_path / "linear")[FROZEN]), _raw(shared))


def test_a_base_in_another_dtype_never_agrees(registry, frozen_zoo, tmp_path):
    base = frozen_zoo / "base" / "model.safetensors"
    save_file({name: tensor.half() for name, tensor in load_file(base).items()}, str(base), metadata={"format": "pt"})
    plan = _plan(registry, tmp_path / "on", frozen_zoo, "ties", {"de-DE": 0.5, "nl-NL": 0.5})
    assert run_merge(plan).details["agreed_tensors"] == 0
    run_merge(dataclasses.replace(plan, output=tmp_path / "off", agreement_shortcut=False))
    _same_bytes(_written(tmp_path / "on"), _written(tmp_path / "off"))


@pytest.mark.parametrize("strategy", ["linear", "ties"])
def test_a_tensor_that_differs_in_a_later_chunk_is_merged_as_without_the_shortcut(registry, frozen_zoo, tmp_path,
                                                                                   strategy):
    folder = frozen_zoo / PATTERN.format(locale="nl-NL")
    embeddings = load_file(folder / "model.safetensors")[FROZEN].clone()
    embeddings[-1, -1] += 0.5  # the last row of four chunks
    _rewrite(folder, **{FROZEN: embeddings})
    plan = _plan(registry, tmp_path / "on", frozen_zoo, strategy, {"de-DE": 0.6, "nl-NL": 0.4}, chunk_size="1KB")
    assert run_merge(plan).details["agreed_tensors"] == 0
    run_merge(dataclasses.replace(plan, output=tmp_path / "off", agreement_shortcut=False))
    _same_bytes(_written(tmp_path / "on"), _written(tmp_path / "off"))


def test_an_agreed_tensor_never_reaches_the_strategy(frozen_zoo, tmp_path):
    seen: list[str] = []

    class Recording(LinearStrategy):
        name = "recording"

        def merge_chunk(self, chunk, statistics):
            seen.append(chunk.name)
            return super().merge_chunk(chunk, statistics)

    plan = plan_merge(None, strategy=Recording(), sources=_sources(frozen_zoo, {"de-DE": 1, "nl-NL": 1}),
                      progress=False, chunk_size="1KB")
    merge_state_dict(plan)
    assert FROZEN not in seen and len(set(seen)) == 24
    seen.clear()
    merge_state_dict(dataclasses.replace(plan, agreement_shortcut=False))
    assert seen.count(FROZEN) == 4  # 55 rows of 64 bytes in 1000-byte chunks


def test_nan_in_an_agreed_tensor_is_named_as_without_the_shortcut(registry, frozen_zoo, tmp_path):
    embeddings = load_file(frozen_zoo / "base" / "model.safetensors")[FROZEN].clone()
    embeddings[20, 3] = float("nan")
    for folder in (frozen_zoo / "base", *(frozen_zoo / PATTERN.format(locale=l) for l in ("de-DE", "nl-NL"))):
        _rewrite(folder, **{FROZEN: embeddings.clone()})
    plan = _plan(registry, None, frozen_zoo, "ties", {"de-DE": 0.5, "nl-NL": 0.5}, chunk_size="1KB")
    messages = []
    for shortcut in (True, False):
        with pytest.raises(TensorFileError) as error:
            merge_state_dict(dataclasses.replace(plan, agreement_shortcut=shortcut))
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"tensor {FROZEN} of model de-DE") and "rows 15:30" in messages[0]


# ------------------------------------------------------------------ evaluation from memory
def test_model_from_state_dict_reads_no_weights(zoo_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = zoo_dir / PATTERN.format(locale="de-DE")
    folder = tmp_path / "no-weights"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    model = model_from_state_dict(folder, load_file(source / "model.safetensors"))
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()]) and not model.training
    disk = AutoModelForSequenceClassification.from_pretrained(source).eval()
    batch = AutoTokenizer.from_pretrained(source)(["the team won the match", "a new film"], padding=True,
                                                   return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, disk(**batch).logits)


def test_a_state_that_does_not_fit_the_config_is_one_line(zoo_dir):
    folder = zoo_dir / PATTERN.format(locale="de-DE")
    state = load_file(folder / "model.safetensors")
    lacking = {k: v for k, v in state.items() if k != "classifier.out_proj.weight"}
    with pytest.raises(ModelError, match=r"lacks tensor classifier\.out_proj\.weight$"):
        model_from_state_dict(folder, lacking)
    with pytest.raises(ModelError, match=r"has tensor extra\.weight, which the config has not$"):
        model_from_state_dict(folder, {**state, "extra.weight": torch.zeros(2)})
    with pytest.raises(ModelError, match=r"has tensor classifier\.out_proj\.bias of shape \[3\], the config's is \[7\]$"):
        model_from_state_dict(folder, {**state, "classifier.out_proj.bias": torch.zeros(3)})


def test_merge_and_evaluate_equals_evaluating_the_written_model(registry, trained, zoo_dir, sib_dir, tmp_path):
    dataset = registry.get("dataset", "sib200")
    examples, labels = dataset.load(str(sib_dir), "sw-KE", "test"), dataset.labels(str(sib_dir))
    plan = _plan(registry, None, trained, "ties", {"de-DE": 0.5, "nl-NL": 0.3, "af-ZA": 0.2}, base=zoo_dir / "base")
    details: dict = {}
    metrics, predictions, timings = merge_and_evaluate(plan, examples, labels, batch_size=4, max_length=16,
                                                       keep=tmp_path / "kept", details=details)
    written = evaluate(tmp_path / "kept", "sib200", "sw-KE", data_dir=sib_dir, batch_size=4, max_length=16,
                       no_cache=True, registry=registry)
    assert metrics == {k: written[k] for k in metrics} and set(metrics) >= {"accuracy", "macro_f1"}
    from merginguriel_core.statistics import load_classifier
    from merginguriel_core.training import predict_logits

    model, tokenizer = load_classifier(tmp_path / "kept", torch.device("cpu"))
    logits = predict_logits(model, tokenizer, examples.texts, 4, 16, torch.device("cpu"))
    assert predictions.tolist() == logits.argmax(-1).tolist() and len(set(predictions.tolist())) > 1
    assert set(timings) == {"merge", "load", "forward"} and all(t >= 0 for t in timings.values())
    assert details["strategy"] == "ties" and details["tensors"] == 25


def test_merge_and_evaluate_checks_labels_before_merging(registry, zoo_dir, sib_dir, monkeypatch):
    from merginguriel_core import merge

    dataset = registry.get("dataset", "sib200")
    examples, labels = dataset.load(str(sib_dir), "sw-KE", "test"), dataset.labels(str(sib_dir))
    plan = _plan(registry, None, zoo_dir, "linear", {"de-DE": 1, "nl-NL": 1})
    monkeypatch.setattr(merge, "merge_state_dict", lambda *args, **kwargs: pytest.fail("merged"))
    with pytest.raises(ConfigError, match="they first differ at id 0"):
        merge_and_evaluate(plan, examples, labels[::-1], evaluators=("accuracy",))
