"""The streaming merge engine, driven through `mu merge` as a user runs it."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merginguriel_core.zoo import build_zoo
from conftest import run_cli

PATTERN = "xlm-roberta-base_massive_k_{locale}"


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _merge(runner, models, out, *extra):
    return run_cli(runner, "merge", "--models", models, "--output", out, "--no-progress", *extra)


def _no_leftovers(parent: Path, name: str) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_linear_equals_hand_computation(runner, zoo_dir, tmp_path):
    out = tmp_path / "merged"
    result = _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "de-DE=5,nl-NL=3,af-ZA=2")
    assert result.exit_code == 0, result.output
    merged = _state(out)
    sources = {loc: _state(zoo_dir / PATTERN.format(locale=loc)) for loc in ("de-DE", "nl-NL", "af-ZA")}
    weights = {"de-DE": 0.5, "nl-NL": 0.3, "af-ZA": 0.2}
    assert set(merged) == set(sources["de-DE"])
    for name, tensor in merged.items():
        expected = sum(weights[loc] * sources[loc][name].double() for loc in weights)
        torch.testing.assert_close(tensor.double(), expected, rtol=1e-6, atol=1e-7)
        assert tensor.dtype == sources["de-DE"][name].dtype


def test_uriel_merge_uses_every_selected_model(runner, zoo_dir, tmp_path):
    out = tmp_path / "merged"
    result = _merge(runner, zoo_dir, out, "--target-lang", "de-DE", "--num-languages", "5")
    assert result.exit_code == 0, result.output
    details = json.loads((out / "merge_details.json").read_text())
    assert details["target"] == "de-DE" and details["weighting"] == "uriel" and details["strategy"] == "linear"
    sources = details["sources"]
    assert len(sources) == 5 and "de-DE" not in [s["locale"] for s in sources]
    assert sum(s["weight"] for s in sources) == pytest.approx(1.0)
    assert details["weighting_details"]["top_k"] == 20 and details["weighting_details"]["features"] == "syntax_knn"
    assert {"torch", "safetensors", "merginguriel"} <= set(details["packages"])
    # Every selected model contributes with its own weight: none dropped, none used as base.
    merged = _state(out)
    name = "roberta.encoder.layer.0.attention.self.query.weight"
    expected = sum(s["weight"] * _state(Path(s["path"]))[name].double() for s in sources)
    torch.testing.assert_close(merged[name].double(), expected, rtol=1e-6, atol=1e-7)
    text = (out / "merge_details.txt").read_text()
    assert "Target       de-DE" in text and sources[0]["locale"] in text


def test_output_loads_and_tokenizer_config_carried(runner, zoo_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "merged"
    assert _merge(runner, zoo_dir, out, "--target-lang", "sw-KE").exit_code == 0
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    logits = model(**tokenizer(["the team won the match"], return_tensors="pt")).logits
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()
    assert model.config.id2label[0] == "science/technology"


def test_sharded_and_chunked_output_is_identical(runner, zoo_dir, tmp_path):
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    args = ("--weighting", "manual", "--weights", "de-DE=1,sv-SE=1")
    assert _merge(runner, zoo_dir, plain, *args).exit_code == 0
    result = _merge(runner, zoo_dir, sharded, *args, "--max-shard-size", "4KB", "--chunk-size", "256")
    assert result.exit_code == 0, result.output
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    merged = {}
    for shard in shards:
        merged.update(load_file(sharded / shard))
    reference = _state(plain)
    assert merged.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(merged[name], reference[name], rtol=1e-6, atol=1e-7)
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(sharded)


def test_existing_output_refused_then_overwritten(runner, zoo_dir, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = _merge(runner, zoo_dir, out, "--target-lang", "sw-KE")
    assert result.exit_code != 0
    assert f"Error: output {out} already exists; pass --overwrite to replace it" in result.output
    assert (out / "mine.txt").read_text() == "keep me"
    result = _merge(runner, zoo_dir, out, "--target-lang", "sw-KE", "--overwrite")
    assert result.exit_code == 0
    assert (out / "model.safetensors").exists() and not (out / "mine.txt").exists()
    assert _no_leftovers(tmp_path, "merged")


def _single_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_shape_mismatch_is_one_line_error_without_output(runner, zoo_copy, tmp_path):
    odd = zoo_copy / "odd"
    build_zoo(odd, ["de-DE"], hidden_size=8)
    shutil.rmtree(zoo_copy / PATTERN.format(locale="de-DE"))
    shutil.move(odd / PATTERN.format(locale="de-DE"), zoo_copy / PATTERN.format(locale="de-DE"))
    out = tmp_path / "merged"
    result = _merge(runner, zoo_copy, out, "--weighting", "manual", "--weights", "nl-NL=1,de-DE=1")
    assert result.exit_code != 0
    line = _single_error_line(result)
    assert "has shape [16] in nl-NL but [8] in de-DE" in line
    assert not out.exists() and _no_leftovers(tmp_path, "merged")


def test_missing_tensor_named(runner, zoo_copy, tmp_path):
    path = zoo_copy / PATTERN.format(locale="de-DE") / "model.safetensors"
    state = load_file(path)
    del state["classifier.dense.bias"]
    save_file(state, path)
    result = _merge(runner, zoo_copy, tmp_path / "m", "--weighting", "manual", "--weights", "nl-NL=1,de-DE=1")
    assert result.exit_code != 0
    line = _single_error_line(result)
    assert "model de-DE (" in line and "lacks tensor classifier.dense.bias, which nl-NL has" in line


def test_truncated_file_is_named(runner, zoo_copy, tmp_path):
    path = zoo_copy / PATTERN.format(locale="nl-NL") / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    out = tmp_path / "m"
    result = _merge(runner, zoo_copy, out, "--weighting", "manual", "--weights", "nl-NL=1,de-DE=1")
    assert result.exit_code != 0
    line = _single_error_line(result)
    assert "truncated" in line and str(path) in line
    assert not out.exists()


def test_label_spaces_must_agree(runner, zoo_copy, tmp_path):
    config = zoo_copy / PATTERN.format(locale="nl-NL") / "config.json"
    data = json.loads(config.read_text())
    data["id2label"]["0"] = "weather"
    config.write_text(json.dumps(data))
    result = _merge(runner, zoo_copy, tmp_path / "m", "--weighting", "manual", "--weights", "nl-NL=1,de-DE=1")
    assert result.exit_code != 0
    assert "label spaces differ" in _single_error_line(result)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--weighting", "manual", "--weights", "de-DE=nan"), "--weights entry 'de-DE=nan': weights must be finite and >= 0"),
        (("--target-lang", "sw-KE", "--top-k", "0"), "--top-k must be at least 1, got 0"),
        (("--target-lang", "sw-KE", "--num-languages", "0"), "--num-languages must be at least 1, got 0"),
        (("--target-lang", "sw-KE", "--strategy", "nope"), "unknown --strategy 'nope'; available: "),
        (("--target-lang", "sw-KE", "--weighting", "nope"), "unknown --weighting 'nope'; available: adamerging, average, learned, local_sinkhorn, manual, proportional, random, representation, softmax, uriel"),
        (("--target-lang", "sw-XX"), "unknown language code 'sw-XX'"),
        (("--target-lang", "sw-KE", "--param", "density=0.5"), "unknown parameter 'density' for strategy 'linear'; allowed: none"),
        (("--target-lang", "sw-KE", "--weighting", "softmax", "--param", "temperature=2"),
         "unknown parameter 'temperature' for strategy 'linear'; allowed: none; 'temperature' is a parameter of "
         "weighting 'softmax': give it as --weighting-param temperature=VALUE"),
        (("--target-lang", "sw-KE", "--device", "tpu"), "unknown --device 'tpu'"),
        (("--target-lang", "sw-KE", "--dtype", "int8"), "unknown --dtype 'int8'"),
        (("--target-lang", "sw-KE", "--source-langs", "ko-KR"), "--source-langs ko-KR has no model"),
        (("--weighting", "manual", "--weights", "ko-KR=1"), "--weights names ko-KR without an available model"),
        (("--weighting", "uriel",), "weighting 'uriel' needs --target-lang"),
        (("--weighting", "manual", "--weights", "de-DE=1,deu_Latn=2"), "--weights names de-DE twice"),
        (("--weighting", "average", "--source-langs", "de-DE,deu,nl-NL"), "--source-langs names de-DE more than once"),
        (("--weighting", "manual", "--target-lang", "sw-KE", "--weights", "sw-KE=1"),
         "--weights names the target sw-KE, whose own model is excluded; pass --include-target to use it"),
        (("--target-lang", "sw-KE", "--max-shard-size", "lots"), "invalid size 'lots': expected a positive byte count"),
        (("--target-lang", "sw-KE", "--model-pattern", "models_{lang}"), "--model-pattern 'models_{lang}' must contain {locale}"),
    ],
)
def test_bad_input_is_one_line_error(runner, zoo_dir, tmp_path, args, message):
    out = tmp_path / "m"
    result = _merge(runner, zoo_dir, out, *args)
    assert result.exit_code != 0
    assert message in _single_error_line(result)
    assert not out.exists() and _no_leftovers(tmp_path, "m")


def test_no_models_in_folder(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    result = _merge(runner, tmp_path / "empty", tmp_path / "m", "--target-lang", "sw-KE")
    assert result.exit_code != 0
    assert "no model folders matching 'xlm-roberta-base_massive_k_{locale}'" in _single_error_line(result)


def test_only_target_model_available(runner, zoo_dir, tmp_path):
    result = run_cli(runner, "merge", "--model", f"sw-KE={zoo_dir / PATTERN.format(locale='sw-KE')}",
                     "--target-lang", "sw-KE", "--output", tmp_path / "m")
    assert result.exit_code != 0
    assert "no source models available for target sw-KE" in _single_error_line(result)


def test_cuda_requested_without_gpu(runner, zoo_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = _merge(runner, zoo_dir, tmp_path / "m", "--target-lang", "sw-KE", "--device", "cuda")
    assert "no CUDA GPU is available" in _single_error_line(result)


def test_dry_run_writes_nothing(runner, zoo_dir, tmp_path):
    out = tmp_path / "m"
    result = _merge(runner, zoo_dir, out, "--target-lang", "de-DE", "--dry-run")
    assert result.exit_code == 0
    assert "Dry run: nothing merged." in result.output and "Target de-DE, weighting uriel: 5 source(s)" in result.output
    assert not out.exists()


def test_registry_csv_and_model_options(runner, zoo_dir, tmp_path):
    csv = tmp_path / "registry.csv"
    csv.write_text(
        "locale,path,base_model\n"
        f"deu_Latn,{zoo_dir / PATTERN.format(locale='de-DE')},xlm-roberta-base\n"
        f"nl-NL,{zoo_dir / PATTERN.format(locale='nl-NL')},xlm-roberta-base\n"
    )
    out = tmp_path / "m"
    result = run_cli(runner, "merge", "--registry", csv, "--model", f"da-DK={zoo_dir / PATTERN.format(locale='da-DK')}",
                     "--target-lang", "sv-SE", "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output
    details = json.loads((out / "merge_details.json").read_text())
    assert sorted(s["locale"] for s in details["sources"]) == ["da-DK", "de-DE", "nl-NL"]


def test_hub_id_that_cannot_be_fetched(runner, zoo_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli(runner, "merge", "--model", "de-DE=some-org/not-here", "--model",
                     f"nl-NL={zoo_dir / PATTERN.format(locale='nl-NL')}", "--weighting", "average",
                     "--output", tmp_path / "m")
    assert result.exit_code != 0
    assert "cannot fetch hub model 'some-org/not-here'" in _single_error_line(result)
    assert not (tmp_path / "m").exists()


def test_auto_chunk_size_bounds_memory_to_an_eighth_of_a_model():
    from merginguriel_core.merge import MAX_CHUNK_BYTES_CPU, MAX_CHUNK_BYTES_GPU, MIN_CHUNK_BYTES, auto_chunk_bytes

    one_model = 1_112_000_000  # xlm-roberta-base classifier, fp32
    assert auto_chunk_bytes(one_model, 5, "cuda") == one_model // 56
    assert auto_chunk_bytes(one_model, 5, "cuda") * 7 <= one_model / 8
    assert auto_chunk_bytes(10 * one_model, 5, "cuda") == MAX_CHUNK_BYTES_GPU == 32 * 1024**2
    assert auto_chunk_bytes(one_model, 5) == auto_chunk_bytes(one_model, 5, "cpu") == MAX_CHUNK_BYTES_CPU == 2 * 1024**2
    assert auto_chunk_bytes(40_000_000, 5) == 40_000_000 // 56  # below the cap: an eighth of the model
    assert auto_chunk_bytes(20_000, 5) == MIN_CHUNK_BYTES


def test_auto_chunking_splits_large_tensors_with_same_result(runner, zoo_dir, tmp_path, monkeypatch):
    import merginguriel_core.merge as merge_module

    args = ("--weighting", "manual", "--weights", "de-DE=2,sv-SE=1,ja-JP=1")
    assert _merge(runner, zoo_dir, tmp_path / "whole", *args, "--chunk-size", "64MB").exit_code == 0
    monkeypatch.setattr(merge_module, "MIN_CHUNK_BYTES", 64)  # tiny models: force many chunks
    reads = []
    original = merge_module.TensorSource.get_rows
    monkeypatch.setattr(merge_module.TensorSource, "get_rows",
                        lambda self, name, start, stop: reads.append((name, start, stop)) or original(self, name, start, stop))
    assert _merge(runner, zoo_dir, tmp_path / "auto", *args).exit_code == 0
    details = json.loads((tmp_path / "auto" / "merge_details.json").read_text())
    assert details["chunk_bytes"] < 1000
    embedding = [r for r in reads if r[0] == "roberta.embeddings.word_embeddings.weight"]
    assert len(embedding) > 3 * 3  # several chunks per source
    whole, auto = _state(tmp_path / "whole"), _state(tmp_path / "auto")
    for name in whole:
        torch.testing.assert_close(auto[name], whole[name], rtol=1e-6, atol=1e-7)


def test_average_weighting_takes_uriel_sources_with_equal_weights(runner, zoo_dir, tmp_path):
    uriel, average = tmp_path / "uriel", tmp_path / "average"
    assert _merge(runner, zoo_dir, uriel, "--target-lang", "de-DE", "--num-languages", "4").exit_code == 0
    assert _merge(runner, zoo_dir, average, "--target-lang", "de-DE", "--num-languages", "4",
                  "--weighting", "average").exit_code == 0
    uriel_sources = json.loads((uriel / "merge_details.json").read_text())["sources"]
    average_sources = json.loads((average / "merge_details.json").read_text())["sources"]
    assert [s["locale"] for s in average_sources] == [s["locale"] for s in uriel_sources]
    assert [s["weight"] for s in average_sources] == [0.25] * 4
    assert len({round(s["weight"], 6) for s in uriel_sources}) > 1


def test_average_without_target_uses_every_model(runner, zoo_dir, tmp_path):
    out = tmp_path / "avg"
    result = _merge(runner, zoo_dir, out, "--weighting", "average", "--source-langs", "de-DE,nl-NL", "--source-langs", "ja-JP")
    assert result.exit_code == 0, result.output
    sources = json.loads((out / "merge_details.json").read_text())["sources"]
    assert sorted(s["locale"] for s in sources) == ["de-DE", "ja-JP", "nl-NL"]
    assert all(s["weight"] == pytest.approx(1 / 3) for s in sources)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_merge_matches_cpu(runner, zoo_dir, tmp_path):
    args = ("--weighting", "manual", "--weights", "de-DE=2,sv-SE=1,ja-JP=1")
    assert _merge(runner, zoo_dir, tmp_path / "cpu", *args, "--device", "cpu").exit_code == 0
    assert _merge(runner, zoo_dir, tmp_path / "gpu", *args, "--device", "cuda").exit_code == 0
    cpu, gpu = _state(tmp_path / "cpu"), _state(tmp_path / "gpu")
    for name in cpu:
        torch.testing.assert_close(gpu[name], cpu[name], rtol=1e-5, atol=1e-6)


def _zoo_fingerprint(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["models", "parent", "source", "inside-source"])
def test_output_never_clobbers_inputs(runner, zoo_copy, tmp_path, where):
    before = _zoo_fingerprint(zoo_copy)
    source = zoo_copy / PATTERN.format(locale="nl-NL")
    out = {"models": zoo_copy, "parent": tmp_path, "source": source, "inside-source": source / "merged"}[where]
    result = _merge(runner, zoo_copy, out, "--target-lang", "de-DE", "--overwrite")
    assert result.exit_code != 0
    assert "would overwrite, hold or sit inside the input" in _single_error_line(result)
    assert _zoo_fingerprint(zoo_copy) == before


def test_output_symlink_and_dot_refused(runner, zoo_dir, tmp_path, monkeypatch):
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    result = _merge(runner, zoo_dir, link, "--target-lang", "de-DE")
    assert "is a symbolic link" in _single_error_line(result) and not (tmp_path / "nowhere").exists()
    monkeypatch.chdir(tmp_path)
    result = _merge(runner, zoo_dir, ".", "--target-lang", "de-DE", "--overwrite")
    assert "must name a new folder" in _single_error_line(result)


def test_interrupted_merge_leaves_nothing(zoo_dir, tmp_path):
    """An interruption (Ctrl-C, or SIGTERM, which `mu` turns into SystemExit) removes the temporary folder."""
    from merginguriel_cli.main import _terminate
    from merginguriel_core.interfaces import MergeStrategy
    from merginguriel_core.merge import SourceModel, run_merge
    from merginguriel_core.plan import plan_merge

    class Interrupted(MergeStrategy):
        name, description = "interrupted", "raises like a SIGTERM half-way"
        calls = 0

        def merge_chunk(self, chunk, statistics):
            Interrupted.calls += 1
            if Interrupted.calls == 5:
                _terminate(15, None)
            return chunk.sources[0]

    out = tmp_path / "merged"
    with pytest.raises(SystemExit) as stop:
        run_merge(plan_merge(out, strategy=Interrupted(), progress=False,
                             sources=[SourceModel("de-DE", zoo_dir / PATTERN.format(locale="de-DE"), 1.0)]))
    assert stop.value.code == 143
    assert not out.exists() and _no_leftovers(tmp_path, "merged")


def test_nan_in_a_source_is_named(runner, zoo_copy, tmp_path):
    path = zoo_copy / PATTERN.format(locale="nl-NL") / "model.safetensors"
    state = load_file(path)
    state["classifier.dense.weight"][0, 0] = float("nan")
    save_file(state, path)
    result = _merge(runner, zoo_copy, tmp_path / "m", "--weighting", "manual", "--weights", "nl-NL=1,de-DE=1")
    assert "tensor classifier.dense.weight of model nl-NL" in _single_error_line(result)
    assert "holds NaN or inf values" in result.output and not (tmp_path / "m").exists()


def test_missing_folders_above_the_output_are_made_and_removed_again_on_failure(runner, zoo_copy, tmp_path):
    out = tmp_path / "results" / "sw" / "merged"
    assert _merge(runner, zoo_copy, out, "--weighting", "manual", "--weights", "nl-NL=1,de-DE=1").exit_code == 0
    assert (out / "model.safetensors").is_file()
    path = zoo_copy / PATTERN.format(locale="nl-NL") / "model.safetensors"
    state = load_file(path)
    state["classifier.dense.weight"][0, 0] = float("nan")
    save_file(state, path)
    failed = tmp_path / "elsewhere" / "deeper" / "merged"
    result = _merge(runner, zoo_copy, failed, "--weighting", "manual", "--weights", "nl-NL=1,de-DE=1")
    assert result.exit_code == 1 and "holds NaN or inf values" in result.output
    assert not (tmp_path / "elsewhere").exists()  # the folders it made for the output went with it
    (tmp_path / "afile").write_text("x")
    result = _merge(runner, zoo_copy, tmp_path / "afile" / "merged", "--weighting", "manual", "--weights", "de-DE=1")
    assert result.exit_code == 1
    assert f"cannot make the folder for --output {tmp_path / 'afile' / 'merged'}: {tmp_path / 'afile'} is a file" \
        in result.output and "Target" not in result.output  # refused before anything ran


def test_huge_manual_weights_are_normalised(runner, zoo_dir, tmp_path):
    out = tmp_path / "m"
    assert _merge(runner, zoo_dir, out, "--weighting", "manual", "--weights", "de-DE=1e308,nl-NL=1e308").exit_code == 0
    assert [s["weight"] for s in json.loads((out / "merge_details.json").read_text())["sources"]] == [0.5, 0.5]


def test_matrix_without_a_source_says_so(runner, zoo_dir, tmp_path):
    matrix = tmp_path / "small.csv"
    codes = ["de-DE", "nl-NL", "af-ZA", "sw-KE"]
    rows = [",".join(["", *codes])] + [",".join([a, *("1.0" if a == b else "0.8" for b in codes)]) for a in codes]
    matrix.write_text("\n".join(rows) + "\n")
    result = _merge(runner, zoo_dir, tmp_path / "m", "--target-lang", "sw-KE", "--similarity-matrix", matrix,
                    "--source-langs", "de-DE,nl-NL,ja-JP", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Note: source ja-JP is not in the similarity matrix; skipped" in result.output


def test_target_outside_massive(runner, zoo_dir, tmp_path):
    out = tmp_path / "yoruba"
    result = _merge(runner, zoo_dir, out, "--target-lang", "yor_Latn", "--num-languages", "3")
    assert result.exit_code == 0, result.output
    details = json.loads((out / "merge_details.json").read_text())
    # Of the zoo's ten languages only Swahili is among Yoruba's 20 most similar: said, not hidden.
    assert details["target"] == "yor" and [s["locale"] for s in details["sources"]] == ["sw-KE"]
    assert "Note: only 1 of the 3 requested source languages have a nonzero weight" in result.output


def test_registry_base_model_is_the_default_base(runner, zoo_dir, tmp_path):
    csv = tmp_path / "registry.csv"
    csv.write_text("locale,path,base_model\n" + "".join(
        f"{loc},{zoo_dir / PATTERN.format(locale=loc)},{zoo_dir / 'base'}\n" for loc in ("de-DE", "nl-NL", "sv-SE")))
    out = tmp_path / "ties"
    result = run_cli(runner, "merge", "--registry", csv, "--weighting", "average", "--strategy", "ties",
                     "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "merge_details.json").read_text())["base_model"] == str(zoo_dir / "base")


def test_an_encoder_checkpoint_is_a_base_for_its_classifiers(runner, zoo_dir, tmp_path):
    """Classifiers nest the encoder under a prefix ('roberta.') that the encoder checkpoint
    lacks: the base's tensors are matched by name with the prefix removed, so a task-vector
    merge gets its base (it used to fall back silently to a weighted average)."""
    from safetensors.torch import load_file, save_file

    full = load_file(str(zoo_dir / "base" / "model.safetensors"))
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    save_file({name.split(".", 1)[1]: t for name, t in full.items() if name.startswith("roberta.")},
              str(encoder / "model.safetensors"))
    args = ("--weighting", "manual", "--weights", "de-DE=2,nl-NL=1", "--strategy", "ties", "--param", "density=0.3")
    assert _merge(runner, zoo_dir, tmp_path / "with-full", *args, "--base-model", zoo_dir / "base").exit_code == 0
    result = _merge(runner, zoo_dir, tmp_path / "with-encoder", *args, "--base-model", encoder)
    assert result.exit_code == 0, result.output
    a = load_file(str(tmp_path / "with-full" / "model.safetensors"))
    b = load_file(str(tmp_path / "with-encoder" / "model.safetensors"))
    encoder_names = [name for name in a if name.startswith("roberta.")]
    assert encoder_names and all(torch.equal(a[name], b[name]) for name in encoder_names)
    details = json.loads((tmp_path / "with-encoder" / "merge_details.json").read_text())
    assert details["base_tensors"]["names"] == "the sources' prefix 'roberta.' removed"
    assert details["base_tensors"]["matched_tensors"] == len([n for n in full if n.startswith("roberta.")])
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    save_file({"something.else": torch.zeros(3)}, str(unrelated / "model.safetensors"))
    result = _merge(runner, zoo_dir, tmp_path / "bad", *args, "--base-model", unrelated)
    assert result.exit_code == 1
    assert f"base model {unrelated} shares no tensor names with the sources" in result.output
    assert not (tmp_path / "bad").exists()
