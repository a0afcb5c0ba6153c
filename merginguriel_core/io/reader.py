"""Lazy, streaming reads of safetensors models, one tensor (or a range of rows) at a time.

A :class:`TensorSource` parses and validates every header when it is opened, then reads
tensor data with plain ``seek`` + ``readinto`` calls into freshly allocated CPU buffers.
It never memory-maps (mapped pages count towards RSS) and never unpickles anything, so
merging K models only ever holds the tensors the caller is working on.

The format: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON mapping
tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative
to the data section, which starts at ``8 + N``), then the data, densely packed.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Mapping

from merginguriel_core.errors import ModelError, TensorFileError
from merginguriel_core.lazy import LazyMapping

if TYPE_CHECKING:
    import torch
else:
    from merginguriel_core.lazy import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# The safetensors library refuses headers above 100 MB; so do we, which also catches
# files whose first 8 bytes are not a header length at all.
MAX_HEADER_BYTES = 100_000_000


def _dtypes() -> dict[str, torch.dtype]:
    dtypes = {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U8": torch.uint8,
        "BOOL": torch.bool,
    }
    for name, attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
        if hasattr(torch, attr):
            dtypes[name] = getattr(torch, attr)
    return dtypes


# safetensors dtype name -> torch dtype, for every dtype this torch build can hold (built,
# and torch imported, on first use).
DTYPES: Mapping[str, torch.dtype] = LazyMapping(_dtypes)
DTYPE_NAMES: Mapping[torch.dtype, str] = LazyMapping(lambda: {dtype: name for name, dtype in DTYPES.items()})


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its file, the absolute byte offset of its data, its size."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    file: Path
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        """Number of elements (1 for a 0-d tensor)."""
        return math.prod(self.shape)


def read_header(file: Path) -> tuple[dict[str, str], list[TensorInfo]]:
    """Parse and validate the header of one safetensors file.

    Returns its ``__metadata__`` and its tensors in data-offset order. Raises
    :class:`TensorFileError` if the file is truncated, has trailing bytes, or its header
    is not valid JSON describing densely packed tensors of known dtypes.
    """
    raw, data_start, file_size = _read_header_bytes(file)
    header = _decode_header(file, raw)
    metadata = _pop_metadata(file, header)
    tensors = _tensor_layout(file, header, data_start, file_size)
    return metadata, tensors


def _read_header_bytes(file: Path) -> tuple[bytes, int, int]:
    """The JSON bytes of ``file``'s header, where its data section starts and the file's size;
    the 8-byte length prefix is checked against the limit and the file size."""
    try:
        file_size = file.stat().st_size
        with open(file, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise TensorFileError(
                    f"truncated safetensors file {file}: {file_size} bytes, too short for the 8-byte header length"
                )
            header_len = int.from_bytes(prefix, "little")
            if header_len > MAX_HEADER_BYTES:
                raise TensorFileError(
                    f"not a safetensors file {file}: header length {header_len} exceeds {MAX_HEADER_BYTES} bytes"
                )
            if 8 + header_len > file_size:
                raise TensorFileError(
                    f"truncated safetensors file {file}: header length says {header_len} bytes, "
                    f"file has {file_size - 8} after the length"
                )
            return handle.read(header_len), 8 + header_len, file_size
    except OSError as exc:
        raise TensorFileError(f"cannot read safetensors file {file}: {exc.strerror or exc}") from exc


def _decode_header(file: Path, raw: bytes) -> dict[str, Any]:
    """The header as a JSON object."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorFileError(f"invalid safetensors header in {file}: not UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise TensorFileError(f"invalid safetensors header in {file}: expected a JSON object")
    return header


def _pop_metadata(file: Path, header: dict[str, Any]) -> dict[str, str]:
    """Take ``__metadata__`` out of ``header`` (leaving the tensor entries); it must map strings to strings."""
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TensorFileError(f"invalid safetensors header in {file}: __metadata__ must map strings to strings")
    return dict(metadata)


def _tensor_layout(file: Path, entries: dict[str, Any], data_start: int, file_size: int) -> list[TensorInfo]:
    """The tensors of the header's ``entries`` in data-offset order, checked to pack the data
    section densely: no gaps, no overlaps, nothing missing or left over at the end."""
    spans: list[tuple[int, int, str, torch.dtype, tuple[int, ...]]] = []
    for name, entry in entries.items():
        dtype, shape, begin, end = _parse_entry(file, name, entry)
        spans.append((begin, end, name, dtype, shape))
    spans.sort(key=lambda span: (span[0], span[1]))  # stable: ties keep header order

    position = 0
    tensors: list[TensorInfo] = []
    for begin, end, name, dtype, shape in spans:
        if begin != position:
            raise TensorFileError(
                f"invalid safetensors header in {file}: tensor '{name}' starts at data offset {begin}, "
                f"expected {position}"
            )
        position = end
        tensors.append(TensorInfo(name, dtype, shape, file, data_start + begin, end - begin))
    data_size = file_size - data_start
    if position > data_size:
        raise TensorFileError(
            f"truncated safetensors file {file}: header needs {position} bytes of data, file has {data_size}"
        )
    if position < data_size:
        raise TensorFileError(
            f"invalid safetensors file {file}: header describes {position} bytes of data, file has {data_size}"
        )
    return tensors


def _parse_entry(file: Path, name: str, entry: Any) -> tuple[torch.dtype, tuple[int, ...], int, int]:
    """Check one tensor entry of a header; return its dtype, shape and data span."""
    where = f"invalid safetensors header in {file}: tensor '{name}'"
    if not isinstance(entry, dict):
        raise TensorFileError(f"{where} is not an object with dtype, shape and data_offsets")
    dtype = DTYPES.get(entry.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise TensorFileError(f"{where} has dtype {entry.get('dtype')!r}, expected one of {', '.join(DTYPES)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise TensorFileError(f"{where} has shape {shape!r}, expected a list of non-negative integers")
    offsets = entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)) or (
        offsets[0] > offsets[1]
    ):
        raise TensorFileError(f"{where} has data_offsets {offsets!r}, expected [begin, end] with 0 <= begin <= end")
    expected = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != expected:
        raise TensorFileError(
            f"{where} spans {offsets[1] - offsets[0]} bytes, expected {expected} for shape {shape} {entry['dtype']}"
        )
    return dtype, tuple(shape), offsets[0], offsets[1]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _resolve_files(path: Path) -> tuple[list[Path], Path | None]:
    """Find the safetensors files of a model path; return them and the index used, if any."""
    if not path.exists():
        raise ModelError(f"model path {path} does not exist")
    if path.is_file():
        if path.name.endswith(".safetensors.index.json"):
            return _shards_of_index(path), path
        if path.suffix == ".safetensors":
            return [path], None
        raise TensorFileError(f"unsupported weights file {path}: expected a .safetensors file or its .index.json")
    # Same preference as transformers: a single model.safetensors wins over an index.
    if (path / SINGLE_FILE).is_file():
        return [path / SINGLE_FILE], None
    if (path / INDEX_FILE).is_file():
        return _shards_of_index(path / INDEX_FILE), path / INDEX_FILE
    candidates = sorted(p for p in path.glob("*.safetensors") if p.is_file())
    if len(candidates) == 1:
        return candidates, None
    if candidates:
        names = ", ".join(p.name for p in candidates)
        raise TensorFileError(f"several safetensors files in {path} ({names}) but no {INDEX_FILE} to combine them")
    pickles = [name for name in PICKLE_FILES if (path / name).exists()]
    if pickles:
        raise TensorFileError(
            f"only pickle weights ({pickles[0]}) in {path}; MergingUriel loads safetensors only"
        )
    raise TensorFileError(f"no safetensors weights in {path}: expected {SINGLE_FILE} or {INDEX_FILE}")


def _shards_of_index(index: Path) -> list[Path]:
    """The shard files named by an index, sorted by file name, each checked to exist."""
    weight_map = _weight_map(index)
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not (index.parent / shard).is_file():
            raise TensorFileError(f"index {index} names shard {shard}, which does not exist in {index.parent}")
    return [index.parent / shard for shard in shards]


def _weight_map(index: Path) -> dict[str, str]:
    try:
        content = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorFileError(f"invalid index {index}: {exc}") from exc
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise TensorFileError(f"invalid index {index}: expected a 'weight_map' object mapping tensor names to files")
    return weight_map


class TensorSource:
    """Lazy reader over one model, given as a folder or as a path to a ``.safetensors`` file.

    A folder holds ``model.safetensors``, or ``model.safetensors.index.json`` and its
    shards, or a single other ``*.safetensors`` file (``model.safetensors`` wins over an
    index, as in transformers).

    Every header is parsed and validated in the constructor; tensor data is read only on
    :meth:`get` / :meth:`get_rows`. One read-only handle per shard is opened on first use
    and kept until :meth:`close`. Reads are serialised by a lock, so a source may be
    shared between threads. ``metadata`` is the ``__metadata__`` of the first file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        files, index = _resolve_files(self.path)
        self.metadata: dict[str, str] = {}
        self._infos: dict[str, TensorInfo] = {}
        for position, file in enumerate(files):
            metadata, tensors = read_header(file)
            if position == 0:
                self.metadata = metadata
            for info in tensors:
                if info.name in self._infos:
                    raise TensorFileError(
                        f"tensor '{info.name}' appears in both {self._infos[info.name].file.name} "
                        f"and {file.name} of {self.path}"
                    )
                self._infos[info.name] = info
        if index is not None:
            self._check_index(index)
        self._handles: dict[Path, BinaryIO] = {}
        self._lock = threading.Lock()

    def _check_index(self, index: Path) -> None:
        """The index and the shard headers must list exactly the same tensors, in the same files."""
        weight_map = _weight_map(index)
        for name, shard in weight_map.items():
            info = self._infos.get(name)
            if info is None or info.file != index.parent / shard:
                raise TensorFileError(f"tensor '{name}' is listed in {index} for {shard} but is not in that file")
        for name, info in self._infos.items():
            if name not in weight_map:
                raise TensorFileError(f"tensor '{name}' in {info.file} is not listed in {index}")

    def keys(self) -> list[str]:
        """Tensor names in shard order, then data-offset order within a file."""
        return list(self._infos)

    def layout(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """``(name, dtype, shape)`` for every tensor, in :meth:`keys` order (a writer layout)."""
        return [(info.name, info.dtype, info.shape) for info in self._infos.values()]

    def info(self, name: str) -> TensorInfo:
        """Where tensor ``name`` lives; :class:`TensorFileError` if the model lacks it."""
        try:
            return self._infos[name]
        except KeyError:
            raise TensorFileError(f"tensor '{name}' not found in {self.path}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def total_bytes(self) -> int:
        """Bytes of tensor data across all files (headers excluded)."""
        return sum(info.nbytes for info in self._infos.values())

    def get(self, name: str) -> torch.Tensor:
        """The whole tensor, as a CPU tensor that owns its memory."""
        info = self.info(name)
        return self._read(info, info.offset, info.nbytes).view(info.dtype).reshape(info.shape)

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` along dim 0, reading only their bytes.

        A 0-d tensor has a single pseudo-row: only ``(0, 1)`` is allowed and returns the
        0-d tensor itself.
        """
        info = self.info(name)
        if not info.shape:
            if (start, stop) != (0, 1):
                raise TensorFileError(
                    f"rows [{start}, {stop}) asked of 0-d tensor '{name}' in {self.path}; only [0, 1) exists"
                )
            return self.get(name)
        rows = info.shape[0]
        if not (0 <= start <= stop <= rows):
            raise TensorFileError(
                f"rows [{start}, {stop}) out of range for tensor '{name}' with {rows} rows in {self.path}"
            )
        row_bytes = info.nbytes // rows if rows else 0
        buffer = self._read(info, info.offset + start * row_bytes, (stop - start) * row_bytes)
        return buffer.view(info.dtype).reshape((stop - start, *info.shape[1:]))

    def _read(self, info: TensorInfo, offset: int, nbytes: int) -> torch.Tensor:
        """``nbytes`` bytes at absolute ``offset`` of ``info.file``, in a new uint8 tensor."""
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        view = memoryview(buffer.numpy())
        with self._lock:
            handle = self._handle(info.file)
            handle.seek(offset)
            done = 0
            while done < nbytes:  # a single read() may return less (e.g. above 2 GiB on Linux)
                got = handle.readinto(view[done:])
                if not got:
                    raise TensorFileError(
                        f"truncated safetensors file {info.file}: tensor '{info.name}' ends past the end of the file"
                    )
                done += got
        return buffer

    def _handle(self, file: Path) -> BinaryIO:
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = open(file, "rb", buffering=0)  # unbuffered: readinto goes straight to our buffer
            except OSError as exc:
                raise TensorFileError(f"cannot open safetensors file {file}: {exc.strerror or exc}") from exc
            self._handles[file] = handle
        return handle

    def close(self) -> None:
        """Close the open shard handles; a later read reopens them."""
        with self._lock:
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorSource({str(self.path)!r}, {len(self._infos)} tensors, {self.total_bytes()} bytes)"
