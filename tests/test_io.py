"""Tests of the streaming safetensors reader and writer against real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merginguriel_core.errors import ConfigError, ModelError, TensorFileError
from merginguriel_core.io import DTYPES, ShardedSafetensorsWriter, TensorSource, parse_size
from merginguriel_core.io import reader as reader_module


def _sample_tensors() -> dict[str, torch.Tensor]:
    """One tensor per interesting case: each common dtype, 0-d, empty, non-contiguous."""
    gen = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(5, 3, generator=gen),
        "f16": torch.randn(4, 2, 2, generator=gen).half(),
        "bf16": torch.randn(7, generator=gen).bfloat16(),
        "i64": torch.arange(-6, 6, dtype=torch.int64).reshape(3, 4),
        "bool": torch.tensor([[True, False, True], [False, False, True]]),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
        "empty_inner": torch.zeros(3, 0, dtype=torch.float16),
        "transposed": torch.arange(12.0).reshape(3, 4).t(),
    }


def _layout(tensors: dict[str, torch.Tensor]) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    return [(name, t.dtype, tuple(t.shape)) for name, t in tensors.items()]


def _write(folder: Path, tensors: dict[str, torch.Tensor], **kwargs: object) -> ShardedSafetensorsWriter:
    with ShardedSafetensorsWriter(folder, _layout(tensors), **kwargs) as writer:  # type: ignore[arg-type]
        for name, tensor in tensors.items():
            writer.write(name, tensor)
    return writer


def _read_back(path: Path, name: str) -> torch.Tensor:
    with TensorSource(path) as source:
        return source.get(name)


def _assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert torch.equal(actual, expected)


# --- round trips -------------------------------------------------------------------------


def test_single_file_round_trip_through_safetensors_and_tensor_source(tmp_path: Path) -> None:
    tensors = _sample_tensors()
    writer = _write(tmp_path / "out", tensors, metadata={"merged_by": "test"})

    assert writer.files == [tmp_path / "out" / "model.safetensors"]
    assert writer.index_file is None
    loaded = load_file(str(writer.files[0]))
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        _assert_same(loaded[name], tensor)

    with TensorSource(tmp_path / "out") as source:
        assert source.keys() == list(tensors)  # written, and read back, in layout order
        assert source.metadata == {"merged_by": "test", "format": "pt"}
        for name, tensor in tensors.items():
            _assert_same(source.get(name), tensor)
        assert source.total_bytes() == sum(t.numel() * t.element_size() for t in tensors.values())
        info = source.info("f32")
        assert (info.dtype, info.shape, info.numel, info.nbytes) == (torch.float32, (5, 3), 15, 60)
        assert info.offset % 8 == 0  # the header is padded to a multiple of 8


def test_header_is_padded_json_with_format_pt(tmp_path: Path) -> None:
    writer = _write(tmp_path / "out", {"w": torch.ones(2, 2)})
    raw = writer.files[0].read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert header_len % 8 == 0
    header = json.loads(raw[8 : 8 + header_len])
    assert header == {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    }
    assert len(raw) == 8 + header_len + 16


def test_write_rows_in_chunks_equals_whole_tensor(tmp_path: Path) -> None:
    big = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    scalar = torch.tensor(7, dtype=torch.int32)
    layout = [("big", big.dtype, (10, 4)), ("scalar", scalar.dtype, ())]
    with ShardedSafetensorsWriter(tmp_path / "out", layout) as writer:
        writer.write_rows("big", big[0:3])
        writer.write_rows("big", big[3:3])  # an empty chunk is allowed
        writer.write_rows("big", big[3:9])
        writer.write_rows("big", big[9:])
        writer.write_rows("scalar", scalar)
    loaded = load_file(str(tmp_path / "out" / "model.safetensors"))
    _assert_same(loaded["big"], big)
    _assert_same(loaded["scalar"], scalar)


def test_bf16_bit_patterns_survive_round_trip(tmp_path: Path) -> None:
    patterns = [0x0000, 0x8000, 0x3F80, 0x7F80, 0xFF80, 0x7FC1, 0x0001, 0x1234]
    bits = torch.tensor(patterns, dtype=torch.int32).to(torch.int16)  # wraps to the 16-bit patterns
    values = bits.view(torch.bfloat16)  # zero, -0, 1, inf, -inf, a NaN payload, subnormal, arbitrary
    _write(tmp_path / "out", {"v": values})
    back = _read_back(tmp_path / "out", "v")
    assert back.dtype == torch.bfloat16
    assert torch.equal(back.view(torch.int16), bits)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_every_supported_dtype_round_trips_bit_exactly(tmp_path: Path, dtype_name: str) -> None:
    dtype = DTYPES[dtype_name]
    raw = torch.arange(48, dtype=torch.uint8) * 7  # arbitrary bytes, reinterpreted
    tensor = raw.view(dtype).reshape(2, -1) if dtype != torch.bool else (raw % 2).bool().reshape(2, -1)
    _write(tmp_path / "out", {"t": tensor})
    via_safetensors = load_file(str(tmp_path / "out" / "model.safetensors"))["t"]
    via_source = _read_back(tmp_path / "out", "t")
    for back in (via_safetensors, via_source):
        assert back.dtype == dtype and back.shape == tensor.shape
        assert torch.equal(back.view(torch.uint8), tensor.view(torch.uint8))  # bitwise, so NaNs compare too


# --- sharding ----------------------------------------------------------------------------


def test_small_max_shard_bytes_gives_shards_and_a_valid_index(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(4, 4),  # 64 bytes
        "b": torch.randn(4, 4),  # 64: a + b = 128 > 100, so b starts shard 2
        "c": torch.randn(2),  # 8: fits with b
        "huge": torch.randn(64),  # 256 > limit: its own shard
        "d": torch.randn(3),  # 12: after huge, a new shard
    }
    writer = _write(tmp_path / "out", tensors, max_shard_bytes=100)

    names = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert [f.name for f in writer.files] == names
    assert writer.index_file == tmp_path / "out" / "model.safetensors.index.json"
    index = json.loads(writer.index_file.read_text())
    assert index["metadata"] == {"total_size": 64 + 64 + 8 + 256 + 12}
    assert index["weight_map"] == {"a": names[0], "b": names[1], "c": names[1], "huge": names[2], "d": names[3]}
    assert sorted(load_file(str(tmp_path / "out" / names[1]))) == ["b", "c"]

    with TensorSource(tmp_path / "out") as source:
        assert source.keys() == list(tensors)
        assert source.info("c").file.name == names[1]
        for name, tensor in tensors.items():
            _assert_same(source.get(name), tensor)


def _tiny_classifier() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
    )
    return BertForSequenceClassification(config).eval()


def test_transformers_loads_a_sharded_model_written_by_the_writer(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = _tiny_classifier()
    state = model.state_dict()
    out = tmp_path / "model"
    writer = ShardedSafetensorsWriter(
        out, [(k, v.dtype, tuple(v.shape)) for k, v in state.items()], max_shard_bytes=8000
    )
    for name, tensor in state.items():
        if tensor.dim() > 0 and tensor.shape[0] > 1:  # exercise the chunked path too
            half = tensor.shape[0] // 2
            writer.write_rows(name, tensor[:half])
            writer.write_rows(name, tensor[half:])
        else:
            writer.write(name, tensor)
    writer.close()
    model.config.save_pretrained(out)
    assert len(writer.files) > 1

    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    input_ids = torch.tensor([[1, 5, 7, 9, 2], [1, 3, 3, 2, 0]])
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
        actual = loaded(input_ids=input_ids).logits
    assert expected.shape == (2, 3)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


# --- reading files written by others -----------------------------------------------------


def test_reads_a_file_saved_by_safetensors(tmp_path: Path) -> None:
    tensors = {k: v.contiguous() for k, v in _sample_tensors().items()}
    save_file(tensors, str(tmp_path / "weights.safetensors"), metadata={"k": "v"})

    for path in (tmp_path, tmp_path / "weights.safetensors"):  # a lone file, by folder or by path
        source = TensorSource(path)
        assert set(source.keys()) == set(tensors)
        offsets = [source.info(k).offset for k in source.keys()]
        assert offsets == sorted(offsets)
        assert source.metadata == {"k": "v"}
        for name, tensor in tensors.items():
            _assert_same(source.get(name), tensor)
        _assert_same(source.get_rows("f32", 1, 4), tensors["f32"][1:4])
        _assert_same(source.get_rows("bool", 1, 2), tensors["bool"][1:2])
        _assert_same(source.get_rows("empty", 0, 0), tensors["empty"])
        _assert_same(source.get_rows("scalar", 0, 1), tensors["scalar"])
        source.close()


def test_reads_a_model_sharded_by_save_pretrained(tmp_path: Path) -> None:
    model = _tiny_classifier()
    model.save_pretrained(tmp_path, max_shard_size="4KB")  # the model is ~16 KB
    assert (tmp_path / "model.safetensors.index.json").exists()
    state = model.state_dict()

    with TensorSource(tmp_path) as source:
        assert sorted(source.keys()) == sorted(state)
        assert len({source.info(k).file for k in source.keys()}) > 1
        shard_order = [source.info(k).file.name for k in source.keys()]
        assert shard_order == sorted(shard_order)
        for name, tensor in state.items():
            _assert_same(source.get(name), tensor)
        embeddings = "bert.embeddings.word_embeddings.weight"
        _assert_same(source.get_rows(embeddings, 10, 20), state[embeddings][10:20])
        _assert_same(source.get_rows(embeddings, 49, 50), state[embeddings][49:])


def test_get_reads_only_the_asked_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matrix = torch.arange(1000 * 8, dtype=torch.float32).reshape(1000, 8)
    save_file({"m": matrix}, str(tmp_path / "model.safetensors"))
    source = TensorSource(tmp_path)

    read_sizes: list[int] = []

    class CountingFile:
        def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
            self.inner = inner

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            got = self.inner.readinto(buffer)
            read_sizes.append(got)
            return got

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.inner, name)

    real_open = open
    monkeypatch.setattr(reader_module, "open", lambda *a, **k: CountingFile(real_open(*a, **k)), raising=False)

    rows = source.get_rows("m", 100, 110)
    _assert_same(rows, matrix[100:110])
    assert sum(read_sizes) == 10 * 8 * 4
    assert rows.untyped_storage().nbytes() == 10 * 8 * 4  # owns just these rows, not a view of more
    source.close()


# --- errors ------------------------------------------------------------------------------


def test_truncated_file_names_file_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4, 4)}, str(path))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(TensorFileError) as err:
        TensorSource(tmp_path)
    assert str(err.value) == (
        f"truncated safetensors file {path}: header needs 64 bytes of data, file has 59"
    )


def test_file_cut_inside_the_header(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4, 4)}, str(path))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(TensorFileError, match=r"truncated safetensors file .*model\.safetensors: header length says"):
        TensorSource(path)


def test_garbage_header(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes((16).to_bytes(8, "little") + b"this is not json")
    with pytest.raises(TensorFileError, match=r"invalid safetensors header in .*model\.safetensors: not UTF-8 JSON"):
        TensorSource(path)
    path.write_bytes(b"PK\x03\x04 a zip file, not safetensors")
    with pytest.raises(TensorFileError, match=r"not a safetensors file .*: header length \d+ exceeds"):
        TensorSource(path)


def _write_raw(path: Path, header: dict[str, object], data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


def test_inconsistent_headers(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    _write_raw(path, {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(TensorFileError, match=r"tensor 'w' spans 8 bytes, expected 12 for shape \[3\] F32"):
        TensorSource(path)
    _write_raw(path, {"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(TensorFileError, match=r"tensor 'w' has dtype 'C64', expected one of F64, F32"):
        TensorSource(path)
    gap = {
        "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
        "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]},
    }
    _write_raw(path, gap, b"\0" * 6)
    with pytest.raises(TensorFileError, match=r"tensor 'b' starts at data offset 4, expected 2"):
        TensorSource(path)
    _write_raw(path, {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 3)
    with pytest.raises(TensorFileError, match=r"header describes 2 bytes of data, file has 3"):
        TensorSource(path)


def test_index_pointing_at_a_missing_shard(tmp_path: Path) -> None:
    _write(tmp_path, {"a": torch.ones(8), "b": torch.ones(8)}, max_shard_bytes=32)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(TensorFileError) as err:
        TensorSource(tmp_path)
    assert str(err.value) == (
        f"index {tmp_path / 'model.safetensors.index.json'} names shard model-00002-of-00002.safetensors, "
        f"which does not exist in {tmp_path}"
    )


def test_index_disagreeing_with_its_shards(tmp_path: Path) -> None:
    _write(tmp_path, {"a": torch.ones(8), "b": torch.ones(8)}, max_shard_bytes=32)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["ghost"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    message = r"tensor 'ghost' is listed in .* for model-00001-of-00002.safetensors but is not in that file"
    with pytest.raises(TensorFileError, match=message):
        TensorSource(tmp_path)
    # The same tensor name in two shards.
    del index["weight_map"]["ghost"]
    index_path.write_text(json.dumps(index))
    save_file({"a": torch.ones(1)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    message = r"tensor 'a' appears in both model-00001-of-00002.safetensors and model-00002-of-00002.safetensors"
    with pytest.raises(TensorFileError, match=message):
        TensorSource(tmp_path)


def test_folder_with_only_pickle_weights(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(TensorFileError) as err:
        TensorSource(tmp_path)
    assert str(err.value) == (
        f"only pickle weights (pytorch_model.bin) in {tmp_path}; MergingUriel loads safetensors only"
    )


def test_missing_path_empty_folder_and_ambiguous_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model path .*nowhere does not exist"):
        TensorSource(tmp_path / "nowhere")
    with pytest.raises(TensorFileError, match=r"no safetensors weights in "):
        TensorSource(tmp_path)
    save_file({"a": torch.ones(1)}, str(tmp_path / "one.safetensors"))
    save_file({"a": torch.ones(1)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(TensorFileError, match=r"several safetensors files in .* \(one.safetensors, two.safetensors\)"):
        TensorSource(tmp_path)


def test_reader_rejects_unknown_tensors_and_bad_row_ranges(tmp_path: Path) -> None:
    _write(tmp_path, {"m": torch.ones(4, 2), "s": torch.tensor(1.0)})
    with TensorSource(tmp_path) as source:
        assert "m" in source and "zz" not in source
        with pytest.raises(TensorFileError, match=rf"tensor 'zz' not found in {tmp_path}"):
            source.get("zz")
        with pytest.raises(TensorFileError, match=r"rows \[3, 5\) out of range for tensor 'm' with 4 rows"):
            source.get_rows("m", 3, 5)
        with pytest.raises(TensorFileError, match=r"rows \[0, 2\) asked of 0-d tensor 's'"):
            source.get_rows("s", 0, 2)


def test_writing_out_of_order_or_with_the_wrong_shape(tmp_path: Path) -> None:
    layout = [("a", torch.float32, (2, 3)), ("b", torch.float16, (4,))]
    writer = ShardedSafetensorsWriter(tmp_path / "out", layout)
    with pytest.raises(TensorFileError, match=r"'b' written out of order to .*: expected 'a' next \(tensor 1 of 2"):
        writer.write("b", torch.ones(4, dtype=torch.float16))
    with pytest.raises(TensorFileError, match=r"tensor 'a' for .* has shape \[3, 2\] F32, expected shape \[2, 3\] F32"):
        writer.write("a", torch.ones(3, 2))
    with pytest.raises(TensorFileError, match=r"has shape \[2, 3\] F64, expected shape \[2, 3\] F32"):
        writer.write("a", torch.ones(2, 3, dtype=torch.float64))
    writer.write_rows("a", torch.ones(1, 3))
    message = r"rows of tensor 'a' .* after 1 rows written, expected rows of shape \[2, 3\] F32"
    with pytest.raises(TensorFileError, match=message):
        writer.write_rows("a", torch.ones(2, 3))  # one row too many
    with pytest.raises(TensorFileError, match=r"tensor 'a' .* written whole after 1 of its rows"):
        writer.write("a", torch.ones(2, 3))
    with pytest.raises(TensorFileError, match=r"tensor 'nope' is not in the layout"):
        writer.write("nope", torch.ones(1))
    writer.write_rows("a", torch.ones(1, 3))
    writer.write("b", torch.ones(4, dtype=torch.float16))
    writer.close()
    _assert_same(_read_back(tmp_path / "out", "a"), torch.ones(2, 3))


def test_closing_before_all_tensors_are_written(tmp_path: Path) -> None:
    layout = [("a", torch.float32, (2,)), ("b", torch.float32, (6, 2))]
    writer = ShardedSafetensorsWriter(tmp_path / "out", layout)
    writer.write("a", torch.ones(2))
    writer.write_rows("b", torch.ones(2, 2))
    with pytest.raises(TensorFileError) as err:
        writer.close()
    assert str(err.value) == (
        f"writer for {tmp_path / 'out'} closed before tensor 'b' was written (2 of 6 rows written); "
        "1 of 2 tensors complete"
    )
    with pytest.raises(TensorFileError, match=r"the writer for .* is closed"):
        writer.write_rows("b", torch.ones(4, 2))


def test_exception_inside_with_closes_without_validating(tmp_path: Path) -> None:
    layout = [("a", torch.float32, (2,)), ("b", torch.float32, (2,))]
    with pytest.raises(RuntimeError, match="merge failed"):
        with ShardedSafetensorsWriter(tmp_path / "out", layout) as writer:
            writer.write("a", torch.ones(2))
            raise RuntimeError("merge failed")
    assert writer._handle is None  # the partial file is closed; the caller removes the folder
    with pytest.raises(TensorFileError, match="truncated"):
        TensorSource(tmp_path / "out")  # and a partial file is never mistaken for a model


def test_writer_refuses_bad_arguments_and_stale_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tensor name 'a' is reserved or repeated"):
        ShardedSafetensorsWriter(tmp_path / "o", [("a", torch.float32, (1,)), ("a", torch.float32, (1,))])
    with pytest.raises(ConfigError, match=r"tensor 'c' has dtype torch.complex64"):
        ShardedSafetensorsWriter(tmp_path / "o", [("c", torch.complex64, (1,))])
    with pytest.raises(ConfigError, match=r"invalid max_shard_bytes 0"):
        ShardedSafetensorsWriter(tmp_path / "o", [], max_shard_bytes=0)
    save_file({"a": torch.ones(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"output folder .* already holds safetensors weights \(model.safetensors\)"):
        ShardedSafetensorsWriter(tmp_path, [("a", torch.float32, (1,))])


def test_empty_layout_writes_an_empty_model(tmp_path: Path) -> None:
    writer = _write(tmp_path / "out", {})
    assert writer.files == [tmp_path / "out" / "model.safetensors"]
    assert load_file(str(writer.files[0])) == {}
    assert TensorSource(tmp_path / "out").keys() == []


# --- parse_size --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GB", 2_000_000_000),
        ("500MB", 500_000_000),
        ("1.5GiB", 1_610_612_736),
        ("1000000", 1_000_000),
        (1_000_000, 1_000_000),
        ("20kb", 20_000),
        ("0.3GB", 300_000_000),
        (" 64 KiB ", 65_536),
        ("7B", 7),
        ("1TiB", 2**40),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "2 gigabytes", "-1MB", "0", 0, -5, "1.5B", "1e9", True, "2GB2"])
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(ConfigError, match=r"invalid size .*: expected a positive byte count with an optional unit B"):
        parse_size(text)
